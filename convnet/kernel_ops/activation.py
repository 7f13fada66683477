"""Launchers for kernels/activation.cu: ReLU and tanh, forward and backward.

    relu_forward(x), relu_backward(dy, y), tanh_forward(x), tanh_backward(dy, y)

Same names and signatures as convnet.reference. float32, C-contiguous arrays
of any shape; NumPy arrays run on the CPU emulation, CuPy arrays on their GPU.
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_same_device, check_same_shape,
    check_version, grid_1d, launch, randn, shape_str)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "relu_forward": "v1",
    "relu_backward": "v1",
    "tanh_forward": "v1",
    "tanh_backward": "v1",
}


# --- launchers ------------------------------------------------------------------

def _unary(op, kernel, x, version):
    check_version(op, version)
    check_float32(op, "x", x)
    y = array_module(x).empty_like(x)
    if x.size:
        launch(kernel, x, grid_1d(x.size, x), BLOCK, (x, y, x.size))
    return y


def _binary(op, kernel, dy, y, version):
    check_version(op, version)
    check_float32(op, "dy", dy)
    check_float32(op, "y", y)
    check_same_shape(op, dy=dy, y=y)
    check_same_device(op, dy=dy, y=y)
    dx = array_module(dy).empty_like(dy)
    if dy.size:
        launch(kernel, dy, grid_1d(dy.size, dy), BLOCK, (dy, y, dx, dy.size))
    return dx


def relu_forward(x, *, version=None):
    """y = max(0, x), elementwise."""
    return _unary("relu_forward", "relu_fwd", x, version)


def relu_backward(dy, y, *, version=None):
    """dx = dy where y > 0, else 0."""
    return _binary("relu_backward", "relu_bwd", dy, y, version)


def tanh_forward(x, *, version=None):
    """y = tanh(x), elementwise."""
    return _unary("tanh_forward", "tanh_fwd", x, version)


def tanh_backward(dy, y, *, version=None):
    """dx = dy * (1 - y^2)."""
    return _binary("tanh_backward", "tanh_bwd", dy, y, version)


# --- checks against the reference -------------------------------------------------

def _cases_for(shape, scale, seed):
    from convnet import reference
    tag = shape_str(shape)

    def inputs_fwd():
        rng = np.random.default_rng(seed)
        return [randn(rng, shape)]

    def inputs_bwd(fwd):
        def make():
            rng = np.random.default_rng(seed)
            x = randn(rng, shape)
            dy = randn(rng, shape)
            # y rounded to float32 first so both sides see the same y
            return [dy, fwd(x.astype(np.float32)).astype(np.float64)]
        return make

    lazy = (lambda make, n: LazyInputs(make, n)) if scale == "alexnet" else (lambda make, n: list(make()))
    return [
        Case(f"relu_fwd {tag}", lazy(inputs_fwd, 1), reference.relu_forward, relu_forward,
             tol=0.0, kernels=("relu_fwd",), scale=scale),
        Case(f"relu_bwd {tag}", lazy(inputs_bwd(reference.relu_forward), 2), reference.relu_backward,
             relu_backward, tol=0.0, kernels=("relu_bwd",), scale=scale),
        Case(f"tanh_fwd {tag}", lazy(inputs_fwd, 1), reference.tanh_forward, tanh_forward,
             tol=1e-6, kernels=("tanh_fwd",), scale=scale),
        Case(f"tanh_bwd {tag}", lazy(inputs_bwd(reference.tanh_forward), 2), reference.tanh_backward,
             tanh_backward, tol=1e-6, kernels=("tanh_bwd",), scale=scale),
    ]


def cases(scale):
    """Checks of every kernel in activation.cu: "small" (odd shapes, emulation) or
    "alexnet" (every conv/fc output of AlexNet at batch 128, GPU)."""
    if scale == "small":
        shapes = [(3, 5, 13, 11), (3, 7), (1,)]
    elif scale == "alexnet":
        from convnet.net import layer_shapes
        shapes = layer_shapes("alexnet", 128)
        shapes = [shapes[n][1] for n in ("conv1a", "conv2a", "conv3a", "conv5a", "fc6a")]
    else:
        raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
    out = []
    for i, shape in enumerate(shapes):
        out.extend(_cases_for(shape, scale, seed=100 + i))
    return out
