"""The functional API: one name per op, backend chosen explicitly or by array type.

    from convnet import ops
    y = ops.lrn_forward(x)                    # NumPy in -> NumPy reference
    y = ops.lrn_forward(x, backend="emu")     # the CUDA kernel on the CPU emulation
    y = ops.lrn_forward(x_gpu)                # CuPy in -> the CUDA kernel on that GPU

Every op has the signature of the same name in convnet.reference, plus
`backend` ("numpy", "emu", "cuda" or None: CuPy arrays -> "cuda", anything
else -> "numpy"). Conventions are in docs/design.md.
"""
import importlib

import numpy as np

from convnet import cpu_ops, reference

BACKENDS = ("numpy", "emu", "cuda")

# op name -> kernel_ops module that launches its kernels
FAMILY = {
    "conv2d_forward": "conv", "conv2d_backward_data": "conv",
    "conv2d_backward_filter": "conv", "conv2d_backward_bias": "conv",
    "fc_forward": "gemm", "fc_backward_data": "gemm",
    "fc_backward_filter": "gemm", "fc_backward_bias": "gemm",
    "lrn_forward": "lrn", "lrn_backward": "lrn",
    "maxpool_forward": "pool", "maxpool_backward": "pool",
    "avgpool_forward": "pool", "avgpool_backward": "pool",
    "relu_forward": "activation", "relu_backward": "activation",
    "tanh_forward": "activation", "tanh_backward": "activation",
    "dropout_forward": "dropout", "dropout_backward": "dropout",
    "softmax_forward": "softmax", "softmax_cross_entropy": "softmax",
    "softmax_cross_entropy_backward": "softmax", "topk_errors": "softmax",
    "sgd_update": "sgd",
}


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def resolve_backend(backend, *arrays):
    """The backend an op runs on: the one asked for, or the arrays' own."""
    if backend is None:
        return "cuda" if any(is_cupy(a) for a in arrays) else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


def _check_arrays(name, backend, arrays):
    for a in arrays:
        if backend == "cuda" and isinstance(a, np.ndarray):
            raise TypeError(f"{name}: backend 'cuda' needs CuPy arrays, got a NumPy array")
        if backend != "cuda" and is_cupy(a):
            raise TypeError(f"{name}: backend {backend!r} needs NumPy arrays, got a CuPy array")


def _make_op(name):
    ref = getattr(reference, name)
    numpy_op = getattr(cpu_ops, name, ref)          # the fast CPU version where there is one

    def op(*args, backend=None, **kwargs):
        arrays = [a for a in args if hasattr(a, "shape") and hasattr(a, "dtype")]
        backend = resolve_backend(backend, *arrays)
        _check_arrays(name, backend, arrays)
        if backend == "numpy":
            return numpy_op(*args, **kwargs)
        family = importlib.import_module(f"convnet.kernel_ops.{FAMILY[name]}")
        return getattr(family, name)(*args, **kwargs)

    op.__name__ = name
    op.__qualname__ = name
    op.__doc__ = ref.__doc__
    return op


for _name in FAMILY:
    globals()[_name] = _make_op(_name)

pool_output_size = reference.pool_output_size
conv_output_size = reference.conv_output_size

__all__ = sorted(FAMILY) + ["pool_output_size", "conv_output_size", "resolve_backend"]
