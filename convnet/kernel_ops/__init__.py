"""Launchers for the CUDA kernels in kernels/*.cu, one module per source file.

Each module's functions take the reference's arguments, allocate outputs with
the array module of their inputs (NumPy -> CPU emulation, CuPy -> GPU) and
launch through convnet.kernels. Each module also defines `cases(scale)`: the
checks of its kernels against the NumPy reference (see convnet.checking).
"""
import importlib

FAMILIES = ["conv", "gemm", "lrn", "pool", "activation", "dropout", "softmax", "sgd", "augment", "fused",
            "gemm_tc", "conv_tc"]


def family_modules():
    """The launcher modules that exist, in a fixed order."""
    mods = []
    for name in FAMILIES:
        try:
            mods.append(importlib.import_module(f"convnet.kernel_ops.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"convnet.kernel_ops.{name}":
                raise
    return mods
