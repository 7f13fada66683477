"""Launchers for kernels/fused.cu: layer pairs fused to save passes over memory.

    lrn_maxpool_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2,
                        groups=1) -> (y, arg)
    lrn_maxpool_backward(dy, x, arg, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3,
                         pool_stride=2, groups=1) -> dx
    relu_dropout_forward(x, p, seed) -> y
    relu_dropout_backward(dy, y, p) -> dx

lrn_maxpool_* equal reference.lrn_maxpool_* = maxpool(lrn(x)) and its gradient (convnet.reference
conventions; groups > 1 normalizes within each of `groups` channel blocks, as
the LRN layer does). `arg` (uint8, the pooled shape) is what the backward
needs: the row-major position of each window's first maximum of the LRN
output; the LRN output itself is never stored.
relu_dropout_forward(x, p, seed) = dropout_forward(relu_forward(x), p, seed)
with the same Philox mask; its gradient needs only y (y > 0 exactly where an
element was kept and positive), so the backward takes no seed.
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_int, check_int32_size, check_number,
    check_same_device, check_same_shape, check_version, grid_1d, launch, randn, shape_str)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "lrn_maxpool_forward": "v1",
    "lrn_maxpool_backward": "v1",
    "relu_dropout_forward": "v1",
    "relu_dropout_backward": "v1",
}
MAX_POOL_AREA = 256        # arg is one byte: pool_size * pool_size positions


def _lrn_pool_geometry(op, shape, size, alpha, beta, k, pool_size, pool_stride, groups):
    from convnet import reference
    check_int(op, "size", size, 1)
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        check_number(op, name, v)
    check_int(op, "pool_size", pool_size, 1)
    check_int(op, "pool_stride", pool_stride, 1)
    check_int(op, "groups", groups, 1)
    if pool_size * pool_size > MAX_POOL_AREA:
        raise ValueError(f"{op}: pool_size {pool_size} is too large for a one-byte argmax "
                         f"(pool_size^2 must be <= {MAX_POOL_AREA})")
    n, c, h, w = shape
    if c % groups:
        raise ValueError(f"{op}: {c} channels must be divisible by groups={groups}")
    try:
        oh = reference.pool_output_size(h, pool_size, pool_stride)
        ow = reference.pool_output_size(w, pool_size, pool_stride)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    check_int32_size(op, n * c * h * w)
    return n, c, c // groups, h, w, oh, ow


def lrn_maxpool_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2,
                        groups=1, *, version=None):
    """(maxpool(lrn(x)), arg): the pooled LRN output and, per window, the position
    (row * pool_size + column within the window) of its first maximum, uint8."""
    op = "lrn_maxpool_forward"
    check_version(op, version)
    check_float32(op, "x", x, ndim=4)
    n, c, cg, h, w, oh, ow = _lrn_pool_geometry(op, x.shape, size, alpha, beta, k,
                                                pool_size, pool_stride, groups)
    xp = array_module(x)
    y = xp.empty((n, c, oh, ow), dtype=np.float32)
    arg = xp.empty((n, c, oh, ow), dtype=np.uint8)
    if y.size:
        launch("lrn_maxpool_fwd", x, grid_1d(y.size, x), BLOCK,
               (x, y, arg, n, c, cg, h, w, oh, ow, size, alpha, beta, k, pool_size, pool_stride))
    return y, arg


def lrn_maxpool_backward(dy, x, arg, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3,
                         pool_stride=2, groups=1, *, version=None):
    """dx = lrn_backward(maxpool_backward(dy, ...), x, ...): the LRN recomputed from x,
    each window's dy sent to the position `arg` names."""
    op = "lrn_maxpool_backward"
    check_version(op, version)
    check_float32(op, "dy", dy, ndim=4)
    check_float32(op, "x", x, ndim=4)
    if not hasattr(arg, "dtype") or arg.dtype != np.uint8:
        raise TypeError(f"{op}: arg must be the uint8 array lrn_maxpool_forward returned, "
                        f"got {getattr(arg, 'dtype', type(arg).__name__)}")
    if not arg.flags.c_contiguous:
        raise ValueError(f"{op}: arg must be C-contiguous")
    check_same_device(op, dy=dy, x=x, arg=arg)
    n, c, cg, h, w, oh, ow = _lrn_pool_geometry(op, x.shape, size, alpha, beta, k,
                                                pool_size, pool_stride, groups)
    for name, a in (("dy", dy), ("arg", arg)):
        if tuple(a.shape) != (n, c, oh, ow):
            raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, pooling gives {(n, c, oh, ow)}")
    dx = array_module(x).empty_like(x)
    if dx.size:
        launch("lrn_maxpool_bwd", x, grid_1d(dx.size, x), BLOCK,
               (dy, x, arg, dx, n, c, cg, h, w, oh, ow, size, alpha, beta, k, pool_size, pool_stride))
    return dx


def _dropout_args(op, p, seed):
    from convnet.kernel_ops.dropout import _check_seed, _threshold
    return _threshold(op, p), _check_seed(op, seed), 1.0 / (1.0 - float(p))


def relu_dropout_forward(x, p, seed, *, version=None):
    """dropout_forward(relu_forward(x), p, seed) in one pass (float32, any shape)."""
    op = "relu_dropout_forward"
    check_version(op, version)
    check_float32(op, "x", x)
    threshold, seed, scale = _dropout_args(op, p, seed)
    y = array_module(x).empty_like(x)
    if x.size:
        launch("relu_dropout_fwd", x, grid_1d(x.size, x), BLOCK, (x, y, x.size, threshold, scale, seed))
    return y


def relu_dropout_backward(dy, y, p, *, version=None):
    """The gradient of relu_dropout_forward from its output y: dy / (1 - p) where y > 0, else 0."""
    op = "relu_dropout_backward"
    check_version(op, version)
    check_float32(op, "dy", dy)
    check_float32(op, "y", y)
    check_same_shape(op, dy=dy, y=y)
    check_same_device(op, dy=dy, y=y)
    _, _, scale = _dropout_args(op, p, 0)
    dx = array_module(dy).empty_like(dy)
    if dy.size:
        launch("relu_dropout_bwd", dy, grid_1d(dy.size, dy), BLOCK, (dy, y, dx, dy.size, scale))
    return dx


# --- checks against the reference -------------------------------------------------

def _lrn_pool_cases(shape, lrn, pool, groups, scale, seed, xscale=1.0):
    from convnet import reference
    size, alpha, beta, k = lrn
    pool_size, pool_stride = pool
    params = [size, alpha, beta, k, pool_size, pool_stride, groups]
    n, c, h, w = shape
    out_shape = (n, c, reference.pool_output_size(h, pool_size, pool_stride),
                 reference.pool_output_size(w, pool_size, pool_stride))
    tag = f"{shape_str(shape)} lrn{size} a{alpha:g} pool{pool_size}/{pool_stride}" + (
        f" g{groups}" if groups > 1 else "")

    def make_fwd():
        return [randn(np.random.default_rng(seed), shape, xscale)] + params

    def make_bwd():
        rng = np.random.default_rng(seed)
        x = randn(rng, shape, xscale)
        dy = randn(rng, out_shape)
        # arg from the float32 forward of the reference: both sides agree on the maxima
        arg = reference.lrn_maxpool_forward(x.astype(np.float32), *params)[1]
        return [dy, x, arg] + params

    lazy = (lambda make, m: LazyInputs(make, m)) if scale == "alexnet" else (lambda make, m: make())
    return [
        Case(f"lrn_maxpool_fwd {tag}", lazy(make_fwd, 1 + len(params)), reference.lrn_maxpool_forward,
             lrn_maxpool_forward, tol=2e-6, kernels=("lrn_maxpool_fwd",), scale=scale),
        Case(f"lrn_maxpool_bwd {tag}", lazy(make_bwd, 3 + len(params)), reference.lrn_maxpool_backward,
             lrn_maxpool_backward, tol=1e-5, kernels=("lrn_maxpool_bwd",), scale=scale),
    ]


def _relu_dropout_cases(shape, p, seed, scale, data_seed):
    from convnet import reference
    tag = f"{shape_str(shape)} p{p:g}"

    def make_fwd():
        return [randn(np.random.default_rng(data_seed), shape), p, seed]

    def make_bwd():
        rng = np.random.default_rng(data_seed)
        x = randn(rng, shape)
        dy = randn(rng, shape)
        y = reference.relu_dropout_forward(x.astype(np.float32), p, seed).astype(np.float64)
        return [dy, y, p]

    lazy = (lambda make, m: LazyInputs(make, m)) if scale == "alexnet" else (lambda make, m: make())
    return [
        Case(f"relu_dropout_fwd {tag}", lazy(make_fwd, 3), reference.relu_dropout_forward,
             relu_dropout_forward, tol=2.5e-7, kernels=("relu_dropout_fwd",), scale=scale),
        Case(f"relu_dropout_bwd {tag}", lazy(make_bwd, 3), reference.relu_dropout_backward,
             relu_dropout_backward,
             tol=2.5e-7, kernels=("relu_dropout_bwd",), scale=scale),
    ]


def cases(scale):
    """Checks of fused.cu against the unfused reference sequences: "small" (batch 3,
    5 and 7 channels, 13x11 and 12x12 images with partial last pooling windows, LRN
    groups, a large alpha where the cross term matters) or "alexnet" (lrn1->pool1,
    lrn2->pool2 of one column, fc6/fc7 of one column, batch 128)."""
    paper = (5, 1e-4, 0.75, 2.0)
    if scale == "small":
        return (_lrn_pool_cases((3, 5, 13, 11), paper, (3, 2), 1, scale, 500)
                + _lrn_pool_cases((3, 7, 12, 12), (3, 0.5, 0.75, 1.0), (3, 2), 1, scale, 501)
                + _lrn_pool_cases((2, 6, 9, 7), (5, 0.1, 0.75, 2.0), (3, 2), 2, scale, 502, xscale=3.0)
                + _lrn_pool_cases((1, 5, 11, 10), (5, 0.2, 0.6, 1.5), (4, 3), 1, scale, 503)
                + _relu_dropout_cases((3, 37), 0.5, 2 ** 40 + 7, scale, 510)
                + _relu_dropout_cases((3, 5, 13, 11), 0.3, 12345, scale, 511)
                + _relu_dropout_cases((5, 7), 0.0, 1, scale, 512))
    if scale == "alexnet":
        from convnet.net import Net
        net = Net("alexnet", materialize=False, fuse=False)
        out = []
        for seed, (lrn, pool) in ((520, ("lrn1a", "pool1a")), (521, ("lrn2a", "pool2a"))):
            L, P = net.layers[lrn], net.layers[pool]
            out += _lrn_pool_cases((128,) + L.in_shapes[0], (L.size, L.alpha, L.beta, L.k),
                                   (P.size, P.stride), 1, scale, seed)
        drop = net.layers["drop6a"]
        return out + _relu_dropout_cases((128,) + drop.in_shapes[0], drop.p, 20121203, scale, 522)
    raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
