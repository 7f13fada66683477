"""Compute precisions of the convolutions and fully connected layers.

    fp32   float32 products and sums (kernels/conv.cu, gemm.cu; the NumPy reference)
    tf32   inputs rounded to TF32 (10 mantissa bits, round to nearest, ties away
           from zero: cvt.rna.tf32.f32), products and sums in float32 (tensor cores)
    bf16   inputs rounded to bfloat16 (7 mantissa bits, round to nearest even),
           products and sums in float32 (tensor cores)

Only the inputs of the conv and fc products are rounded: weights (the master
copy the optimizer updates), activations and gradients stay float32 in memory,
and LRN, pooling, softmax, the loss and the update run in float32 as before.

`round_to(a, precision)` is the rounding the kernels apply, on NumPy arrays
(float32 first, as the kernels see float32): the value cases compare the
tensor-core kernels with the float64 reference on these rounded inputs, and the
host device runs its reference on them (so `--precision` means the same on the
CPU, as a model of the rounding, not of the tensor cores' summation order).
"""
import numpy as np

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def round_tf32(a):
    """a (any float dtype) -> float32 values rounded to TF32, nearest, ties away from zero."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    r = np.where(finite, (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000), u)
    return r.astype(np.uint32).view(np.float32)


def round_bf16(a):
    """a (any float dtype) -> float32 values rounded to bfloat16, nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    r = np.where(nan, u | np.uint32(0x00400000), r)
    return r.astype(np.uint32).view(np.float32)


def round_to(a, precision):
    """The input rounding of `precision`, in a's dtype (fp32: a unchanged)."""
    check_precision(precision)
    if precision == "fp32" or a is None:
        return a
    r = round_tf32(a) if precision == "tf32" else round_bf16(a)
    return r.astype(a.dtype, copy=False)
