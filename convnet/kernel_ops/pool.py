"""Launchers for kernels/pool.cu: overlapping max and average pooling.

    maxpool_forward(x, size=3, stride=2)      maxpool_backward(dy, x, y, size=3, stride=2)
    avgpool_forward(x, size=3, stride=2)      avgpool_backward(dy, x_shape, size=3, stride=2)

Same names, signatures and conventions as convnet.reference: output size
ceil((H - size) / stride) + 1 (reference.pool_output_size; the last window
may be clipped), max ties go to the first maximum in row-major order,
average divides by the in-image count of the window. float32 C-contiguous NCHW.
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_int, check_int32_size,
    check_same_device, check_version, grid_1d, launch, randn, shape_str)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "maxpool_forward": "v1",
    "maxpool_backward": "v1",
    "avgpool_forward": "v1",
    "avgpool_backward": "v1",
}


def _geometry(op, shape, size, stride):
    from convnet import reference
    check_int(op, "size", size, 1)
    check_int(op, "stride", stride, 1)
    n, c, h, w = shape
    try:
        oh, ow = reference.pool_output_size(h, size, stride), reference.pool_output_size(w, size, stride)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    check_int32_size(op, n * c * h * w)
    return n * c, h, w, oh, ow


def _check_pooled(op, name, a, planes_shape, oh, ow):
    if tuple(a.shape) != planes_shape + (oh, ow):
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, pooling gives {planes_shape + (oh, ow)}")


def _forward(op, kernel, x, size, stride, version):
    check_version(op, version)
    check_float32(op, "x", x, ndim=4)
    planes, h, w, oh, ow = _geometry(op, x.shape, size, stride)
    y = array_module(x).empty(x.shape[:2] + (oh, ow), dtype=np.float32)
    if y.size:
        launch(kernel, x, grid_1d(y.size, x), BLOCK, (x, y, planes, h, w, oh, ow, size, stride))
    return y


def maxpool_forward(x, size=3, stride=2, *, version=None):
    """y = max over each size x size window (stride `stride`, last window clipped)."""
    return _forward("maxpool_forward", "maxpool_fwd", x, size, stride, version)


def avgpool_forward(x, size=3, stride=2, *, version=None):
    """y = mean over the in-image elements of each window."""
    return _forward("avgpool_forward", "avgpool_fwd", x, size, stride, version)


def maxpool_backward(dy, x, y, size=3, stride=2, *, version=None):
    """dx: each window's dy goes to its first maximum; overlapping windows add."""
    op = "maxpool_backward"
    check_version(op, version)
    for name, a in (("dy", dy), ("x", x), ("y", y)):
        check_float32(op, name, a, ndim=4)
    check_same_device(op, dy=dy, x=x, y=y)
    planes, h, w, oh, ow = _geometry(op, x.shape, size, stride)
    _check_pooled(op, "dy", dy, tuple(x.shape[:2]), oh, ow)
    _check_pooled(op, "y", y, tuple(x.shape[:2]), oh, ow)
    dx = array_module(x).empty_like(x)
    if dx.size:
        launch("maxpool_bwd", x, grid_1d(dx.size, x), BLOCK,
               (dy, x, y, dx, planes, h, w, oh, ow, size, stride))
    return dx


def avgpool_backward(dy, x_shape, size=3, stride=2, *, version=None):
    """dx: each window's dy / count spread over its in-image elements; overlaps add."""
    op = "avgpool_backward"
    check_version(op, version)
    check_float32(op, "dy", dy, ndim=4)
    if len(tuple(x_shape)) != 4:
        raise ValueError(f"{op}: x_shape must be an (N, C, H, W) shape, got {tuple(x_shape)}")
    x_shape = tuple(check_int(op, "x_shape", s, 0) for s in x_shape)
    planes, h, w, oh, ow = _geometry(op, x_shape, size, stride)
    _check_pooled(op, "dy", dy, x_shape[:2], oh, ow)
    dx = array_module(dy).empty(x_shape, dtype=np.float32)
    if dx.size:
        launch("avgpool_bwd", dy, grid_1d(dx.size, dy), BLOCK,
               (dy, dx, planes, h, w, oh, ow, size, stride))
    return dx


# --- checks against the reference -------------------------------------------------

def _cases_for(shape, size, stride, scale, seed):
    from convnet import reference
    n, c, h, w = shape
    oh, ow = reference.pool_output_size(h, size, stride), reference.pool_output_size(w, size, stride)
    out_shape = (n, c, oh, ow)
    tag = f"{shape_str(shape)} {size}/{stride}"

    def make_x():
        return [randn(np.random.default_rng(seed), shape), size, stride]

    def make_max_bwd():
        rng = np.random.default_rng(seed)
        x = randn(rng, shape)
        dy = randn(rng, out_shape)
        y = reference.maxpool_forward(x, size, stride)   # exact: max of float32 values
        return [dy, x, y, size, stride]

    def make_avg_bwd():
        rng = np.random.default_rng(seed)
        randn(rng, shape)
        return [randn(rng, out_shape), shape, size, stride]

    def lazy(make, length):
        return LazyInputs(make, length) if scale == "alexnet" else make()

    return [
        Case(f"maxpool_fwd {tag}", lazy(make_x, 3), reference.maxpool_forward, maxpool_forward,
             tol=0.0, kernels=("maxpool_fwd",), scale=scale),
        Case(f"maxpool_bwd {tag}", lazy(make_max_bwd, 5), reference.maxpool_backward, maxpool_backward,
             tol=1e-6, kernels=("maxpool_bwd",), scale=scale),
        Case(f"avgpool_fwd {tag}", lazy(make_x, 3), reference.avgpool_forward, avgpool_forward,
             tol=1e-6, kernels=("avgpool_fwd",), scale=scale),
        Case(f"avgpool_bwd {tag}", lazy(make_avg_bwd, 4), reference.avgpool_backward, avgpool_backward,
             tol=1e-6, kernels=("avgpool_bwd",), scale=scale),
    ]


def cases(scale):
    """Checks of pool.cu: "small" (odd shapes; 13x11 and 12x12 leave a partial last
    window with 3/2; also 2/2, 3/1, 4/3, 1x1 outputs and stride > size, 2/3) or "alexnet" (pool1, pool2,
    pool5 at batch 128)."""
    if scale == "small":
        geoms = [((3, 5, 13, 11), 3, 2), ((3, 7, 12, 12), 3, 2), ((2, 5, 12, 12), 2, 2),
                 ((2, 3, 7, 9), 3, 1), ((1, 3, 11, 10), 4, 3), ((3, 2, 3, 4), 3, 2),
                 ((2, 3, 7, 10), 2, 3)]
    elif scale == "alexnet":
        from convnet.net import Net
        net = Net("alexnet", materialize=False, fuse=False)
        geoms = [((128,) + net.layers[n].in_shapes[0], net.layers[n].size, net.layers[n].stride)
                 for n in ("pool1a", "pool2a", "pool5a")]
    else:
        raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
    out = []
    for i, (shape, size, stride) in enumerate(geoms):
        out.extend(_cases_for(shape, size, stride, scale, 300 + i))
    return out
