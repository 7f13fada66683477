"""Check a kernel against its NumPy reference: one body, any backend.

A Case holds NumPy inputs (float64 arrays, int arrays, and plain parameters),
`ref`, the reference applied to float64 inputs, and `kern`, the launcher
applied to float32 inputs of the backend's array type. `run_case` compares
every output tensor by the normwise relative error
    max|got - ref| / max|ref|
and reports the worst; a NaN anywhere, a shape mismatch or an output that
was not written fails.
"""
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class Case:
    name: str                       # e.g. "lrn_fwd 3x5x13x11"
    inputs: Sequence                # NumPy arrays (float64 / int) and parameters
    ref: Callable                   # ref(*float64 inputs) -> array or tuple
    kern: Callable                  # kern(*float32 inputs on the backend) -> array or tuple
    tol: float = 1e-5
    kernels: Sequence[str] = field(default_factory=tuple)   # kernel names exercised
    scale: str = "small"            # "small" or "alexnet"


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def to_device(value, device):
    """float64 NumPy -> float32 on the device; wide ints -> int32; others unchanged."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        elif value.dtype.kind == "i" and value.dtype.itemsize > 4:
            value = value.astype(np.int32)
        value = device.asarray(value)
    return value


def to_numpy(value):
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return np.asarray(value).view(np.ndarray) if isinstance(value, np.ndarray) else np.asarray(value)
    if hasattr(value, "get"):
        return value.get()
    return np.asarray(value)


def relative_error(got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape} != reference shape {ref.shape}")
    if not np.all(np.isfinite(got)):
        return float("inf")
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-30)
    return float(np.max(np.abs(got - ref))) / scale if ref.size else 0.0


def run_case(case, device):
    """Runs case.kern on a device that runs kernels (convnet.backend.emu() or .cuda(i)), with
    that device current. Returns (worst relative error, list of per-output errors)."""
    ref_in = [v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
              for v in case.inputs]
    ref = _as_tuple(case.ref(*ref_in))
    with device.context():
        got = _as_tuple(case.kern(*[to_device(v, device) for v in case.inputs]))
    if len(got) != len(ref):
        raise AssertionError(f"{case.name}: {len(got)} outputs, reference has {len(ref)}")
    errs = [relative_error(to_numpy(g), r) for g, r in zip(got, ref)]
    return max(errs), errs


def all_cases(scale="small"):
    from convnet.kernel_ops import family_modules
    cases = []
    for mod in family_modules():
        if hasattr(mod, "cases"):
            cases.extend(mod.cases(scale))
    return cases
