"""Launchers for kernels/lrn.cu: cross-channel local response normalization.

    lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0)
    lrn_backward(dy, x, y, size=5, alpha=1e-4, beta=0.75, k=2.0)

Same names, signatures and convention as convnet.reference (the paper's: alpha
multiplies the plain window sum), plus `version=`: None (the shipped one),
"v1" or "v2" (see kernels/lrn.cu). x, dy, y: float32 C-contiguous (N, C, H, W).
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_int, check_int32_size, check_number,
    check_same_device, check_same_shape, grid_1d, launch, randn, shape_str)

# op -> the kernel version it runs: v2 (register shift-register window), except that
# v1 (direct sums) runs where v2 does not apply (size > V2_MAX_SIZE)
SHIPPED = {"lrn_forward": "v2", "lrn_backward": "v2"}
V2_MAX_SIZE = 9         # kernels/lrn.cu instantiates v2 for size // 2 <= 4
KERNELS = {"v1": ("lrn_fwd", "lrn_bwd"), "v2": ("lrn_fwd_v2", "lrn_bwd_v2")}


def _version(op, version, size):
    """The kernel version to run: the one asked for, or SHIPPED where it applies."""
    if version is None:
        return SHIPPED[op] if size <= V2_MAX_SIZE else "v1"
    if version not in KERNELS:
        raise ValueError(f"{op}: unknown kernel version {version!r}; kept versions: {', '.join(KERNELS)}")
    if version == "v2" and size > V2_MAX_SIZE:
        raise ValueError(f"{op}: version v2 handles size <= {V2_MAX_SIZE}, got size {size}")
    return version


def _check_params(op, size, alpha, beta, k):
    check_int(op, "size", size, 1)
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        check_number(op, name, v)


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, *, version=None):
    """y[:, c] = x[:, c] / (k + alpha * sum_{|j - c| <= size//2} x[:, j]^2) ** beta."""
    op = "lrn_forward"
    check_float32(op, "x", x, ndim=4)
    _check_params(op, size, alpha, beta, k)
    kernel = KERNELS[_version(op, version, size)][0]
    n, c, h, w = x.shape
    check_int32_size(op, x.size)
    y = array_module(x).empty_like(x)
    pixels = n * h * w
    if x.size:
        launch(kernel, x, grid_1d(pixels, x), BLOCK,
               (x, y, n, c, h * w, size, alpha, beta, k))
    return y


def lrn_backward(dy, x, y, size=5, alpha=1e-4, beta=0.75, k=2.0, *, version=None):
    """The exact gradient, direct term and cross-channel term (see kernels/lrn.cu)."""
    op = "lrn_backward"
    for name, a in (("dy", dy), ("x", x), ("y", y)):
        check_float32(op, name, a, ndim=4)
    check_same_shape(op, dy=dy, x=x, y=y)
    check_same_device(op, dy=dy, x=x, y=y)
    _check_params(op, size, alpha, beta, k)
    kernel = KERNELS[_version(op, version, size)][1]
    n, c, h, w = x.shape
    check_int32_size(op, x.size)
    dx = array_module(x).empty_like(x)
    if x.size:
        launch(kernel, x, grid_1d(n * h * w, x), BLOCK,
               (dy, x, y, dx, n, c, h * w, size, alpha, beta, k))
    return dx


# --- checks against the reference -------------------------------------------------

def _cases_for(shape, size, alpha, beta, k, scale, seed, xscale=1.0):
    from convnet import reference
    tag = f"{shape_str(shape)} size{size} alpha{alpha:g}"
    params = (size, alpha, beta, k)

    def make_fwd():
        rng = np.random.default_rng(seed)
        return [randn(rng, shape, xscale)] + list(params)

    def make_bwd():
        rng = np.random.default_rng(seed)
        x = randn(rng, shape, xscale)
        dy = randn(rng, shape)
        y = reference.lrn_forward(x.astype(np.float32), *params).astype(np.float64)
        return [dy, x, y] + list(params)

    if scale == "alexnet":
        fwd_in, bwd_in = LazyInputs(make_fwd, 5), LazyInputs(make_bwd, 7)
    else:
        fwd_in, bwd_in = make_fwd(), make_bwd()
    out = []
    for version, (kfwd, kbwd) in KERNELS.items():
        if version == "v2" and size > V2_MAX_SIZE:
            continue

        def fwd(*a, version=version):
            return lrn_forward(*a, version=version)

        def bwd(*a, version=version):
            return lrn_backward(*a, version=version)

        out += [Case(f"{kfwd} {tag}", fwd_in, reference.lrn_forward, fwd,
                     tol=2e-6, kernels=(kfwd,), scale=scale),
                Case(f"{kbwd} {tag}", bwd_in, reference.lrn_backward, bwd,
                     tol=1e-5, kernels=(kbwd,), scale=scale)]
    return out


def cases(scale):
    """Checks of lrn.cu: "small" (odd shapes, sizes 5 and 3, the paper's alpha and a
    large alpha where the cross term matters) or "alexnet" (lrn1, lrn2 at batch 128)."""
    if scale == "small":
        return (_cases_for((3, 5, 13, 11), 5, 1e-4, 0.75, 2.0, scale, 200)
                + _cases_for((3, 7, 12, 12), 3, 0.5, 0.75, 1.0, scale, 201)
                + _cases_for((2, 7, 5, 3), 5, 0.1, 0.75, 2.0, scale, 202, xscale=3.0)
                + _cases_for((1, 3, 4, 5), 7, 0.2, 0.6, 1.5, scale, 203)
                + _cases_for((2, 12, 3, 3), 9, 0.1, 0.75, 2.0, scale, 204)
                + _cases_for((2, 13, 3, 2), 11, 0.1, 0.75, 2.0, scale, 205)
                + _cases_for((3, 6, 2, 3), 4, 0.3, 0.75, 1.0, scale, 206))
    if scale == "alexnet":
        from convnet.net import Net
        net = Net("alexnet", materialize=False, fuse=False)
        out = []
        for seed, name in ((210, "lrn1a"), (211, "lrn2a")):
            L = net.layers[name]
            out += _cases_for((128,) + L.in_shapes[0], L.size, L.alpha, L.beta, L.k, scale, seed)
        return out
    raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
