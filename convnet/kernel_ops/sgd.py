"""Launcher for kernels/sgd.cu: the paper's SGD update, one fused kernel, in place.

    sgd_update(w, dw, v, lr, momentum=0.9, weight_decay=0.0005)   -> None
        v <- momentum*v - weight_decay*lr*w - lr*dw ;  w <- w + v

Same name and signature as convnet.reference. w, dw, v: float32 C-contiguous
arrays of one shape on one backend; w and v are updated in place (writable).
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, check_float32, check_number, check_same_device, check_same_shape,
    check_version, grid_1d, is_cupy, launch, randn, shape_str)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "sgd_update": "v1",
}


def sgd_update(w, dw, v, lr, momentum=0.9, weight_decay=0.0005, *, version=None):
    """In place: v <- momentum*v - weight_decay*lr*w - lr*dw ; w <- w + v. Returns None."""
    op = "sgd_update"
    check_version(op, version)
    for name, a in (("w", w), ("dw", dw), ("v", v)):
        check_float32(op, name, a)
    check_same_shape(op, w=w, dw=dw, v=v)
    check_same_device(op, w=w, dw=dw, v=v)
    for name, a in (("w", w), ("v", v)):
        if not is_cupy(a) and not a.flags.writeable:
            raise ValueError(f"{op}: {name} is updated in place and must be writable")
    if w is v or (not is_cupy(w) and np.shares_memory(w, v)):
        raise ValueError(f"{op}: w and v must not share memory")
    for name, val in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        check_number(op, name, val)
    # weight_decay * lr multiplied once in double, as the reference does
    decay = float(weight_decay) * float(lr)
    if w.size:
        launch("sgd_update", w, grid_1d(w.size, w), BLOCK, (w, dw, v, w.size, lr, momentum, decay))


# --- checks against the reference -------------------------------------------------

def _stepper(update, steps):
    """A Case function: `steps` updates on copies of (w, v) with the same dw; returns (w, v)."""
    def run(w, dw, v, lr, momentum, weight_decay):
        w, v = w.copy(), v.copy()
        for _ in range(steps):
            update(w, dw, v, lr, momentum, weight_decay)
        return w, v
    return run


def _case(shape, steps, lr, momentum, weight_decay, scale, seed):
    from convnet import reference
    tag = f"{shape_str(shape)} x{steps} lr{lr:g}"

    def make():
        rng = np.random.default_rng(seed)
        return [randn(rng, shape, 0.01), randn(rng, shape), randn(rng, shape, 1e-3),
                lr, momentum, weight_decay]

    ins = LazyInputs(make, 6) if scale == "alexnet" else make()
    return Case(f"sgd_update {tag}", ins, _stepper(reference.sgd_update, steps),
                _stepper(sgd_update, steps), tol=1e-6, kernels=("sgd_update",), scale=scale)


def cases(scale):
    """Checks of sgd.cu: "small" (odd shapes, one and three steps, the paper's
    hyper-parameters and others) or "alexnet" (the fc6 weight, 4096x9216)."""
    if scale == "small":
        return [_case((3, 5, 13, 11), 1, 0.01, 0.9, 0.0005, scale, 600),
                _case((37, 29), 3, 0.05, 0.5, 0.004, scale, 601),
                _case((7,), 2, 0.1, 0.0, 0.0, scale, 602)]
    if scale == "alexnet":
        return [_case((4096, 9216), 1, 0.01, 0.9, 0.0005, scale, 610)]
    raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
