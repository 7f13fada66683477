"""NumPy references for every op: the spec the CUDA kernels are checked against.

Layout. Activations are NCHW arrays (N, C, H, W); fully connected activations
are (N, features); conv weights are (F, C/groups, KH, KW); fc weights are
(out, in); labels are integer arrays (N,). Every function works in the
floating dtype of its inputs (float32 in -> float32 out, float64 in ->
float64 out) and returns new C-contiguous arrays, except sgd_update, which
updates w and v in place.

What each op computes (x input, y output, dy = dL/dy, dx = dL/dx):

  conv2d      y[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] *
                  xpad[n, g*C/groups + c, i*sh + p, j*sw + q],  g = f // (F/groups)
              xpad is x with `pad` zeros on each side; output size
              (H + 2*pad - KH) // stride + 1 (conv_output_size).
  fc          y = x @ w.T + b.
  lrn         y[c] = x[c] / (k + alpha * sum_{j=max(0,c-size//2)}^{min(C-1,c+size//2)} x[j]^2) ** beta
              (the paper's convention: alpha multiplies the plain sum).
  max/avg     windows of size x size, stride `stride`; output size
  pooling     ceil((H - size) / stride) + 1 (pool_output_size), so the last
              window may be clipped at the border; a last window that would start
              outside the input (stride > size) is dropped, as PyTorch's ceil mode does. Max: the gradient goes to the
              first maximal element of a window in row-major order; windows that
              overlap add their gradients. Average: divides by the number of
              in-image elements of the (possibly clipped) window.
  relu, tanh  y = max(0, x), dx = dy * (y > 0); y = tanh(x), dx = dy * (1 - y^2).
  dropout     inverted dropout: element i (flat C-order index) is kept when word 0
              of philox4x32_10(counter=(i mod 2^32, i >> 32, 0, 0),
              key=(seed mod 2^32, seed >> 32)) is >= dropout_threshold(p); kept
              values are scaled by 1 / (1 - p). Nothing is stored: the backward
              pass regenerates the mask from (seed, index).
  softmax     p = exp(z - max z) / sum exp(z - max z) along the class axis;
              cross-entropy loss = mean_n -log p[n, label[n]]; its gradient with
              respect to the logits is (p - onehot) / N.
  top-k       a row is an error when k or more classes have a strictly larger
              score than its label's.
  sgd         v <- momentum*v - weight_decay*lr*w - lr*dw ; w <- w + v (in place).

The fused ops (one kernel where the GPU runs two layers) are defined here as
the compositions they equal: conv2d_forward(relu=True), lrn_maxpool_* and
relu_dropout_*.

The implementations are vectorized (im2col-style windows from
sliding_window_view contracted with BLAS through tensordot; loops only over
groups and kernel offsets, never over pixels) because the CPU training path
runs on them. tests/loops.py holds a second, plain-loop version of every forward.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "conv_output_size", "conv2d_forward", "conv2d_backward_data",
    "conv2d_backward_filter", "conv2d_backward_bias",
    "fc_forward", "fc_backward_data", "fc_backward_filter", "fc_backward_bias",
    "lrn_forward", "lrn_backward",
    "pool_output_size", "maxpool_forward", "maxpool_backward",
    "avgpool_forward", "avgpool_backward",
    "relu_forward", "relu_backward", "tanh_forward", "tanh_backward",
    "philox4x32_10", "dropout_threshold", "dropout_mask", "dropout_forward",
    "dropout_backward",
    "softmax_forward", "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "topk_errors", "sgd_update",
    "window_argmax", "lrn_maxpool_forward", "lrn_maxpool_backward",
    "relu_dropout_forward", "relu_dropout_backward",
]


# --- argument checks ------------------------------------------------------

def _float_array(a, name, ndim=None):
    """a as an ndarray of a floating dtype (and `ndim` dimensions), else a one-line error."""
    if not isinstance(a, np.ndarray):
        if type(a).__module__.split(".")[0] == "cupy":
            raise TypeError(f"{name}: the NumPy reference needs a NumPy array, got a CuPy array")
        a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating array (float32 or float64), got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def _int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _pair(value, name, minimum):
    """An int or an (h, w) pair of ints -> (h, w)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
        return _int(value[0], name, minimum), _int(value[1], name, minimum)
    v = _int(value, name, minimum)
    return v, v


def _shape4(shape, name):
    if len(shape) != 4:
        raise ValueError(f"{name} must be an (N, C, H, W) shape, got {tuple(shape)}")
    return tuple(_int(s, name, 0) for s in shape)


# --- convolution ----------------------------------------------------------

def conv_output_size(n, k, stride=1, pad=0):
    """Output length of a convolution along one axis: (n + 2*pad - k) // stride + 1."""
    n, k = _int(n, "input size", 1), _int(k, "kernel size", 1)
    stride, pad = _int(stride, "stride", 1), _int(pad, "pad", 0)
    if k > n + 2 * pad:
        raise ValueError(f"kernel size {k} is larger than the padded input {n} + 2*{pad}")
    return (n + 2 * pad - k) // stride + 1


def _conv_geometry(x_shape, w_shape, stride, pad, groups):
    """Checks a convolution's shapes; returns (sh, sw), (ph, pw), groups, (OH, OW)."""
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(pad, "pad", 0)
    groups = _int(groups, "groups", 1)
    if c % groups:
        raise ValueError(f"input channels {c} are not divisible by groups={groups}")
    if f % groups:
        raise ValueError(f"filters {f} are not divisible by groups={groups}")
    if cg != c // groups:
        raise ValueError(f"weight has {cg} input channels per group, input has {c} channels "
                         f"in {groups} group(s) ({c // groups} per group)")
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * ph}x{w + 2 * pw}")
    oh = conv_output_size(h, kh, sh, ph)
    ow = conv_output_size(w, kw, sw, pw)
    return (sh, sw), (ph, pw), groups, (oh, ow)


def _conv_windows(x, kernel, stride, pad, out):
    """Every receptive field of x as a view (N, C, OH, OW, KH, KW) of the zero-padded input."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return win[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]


def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, relu=False):
    """y[n, f] = b[f] + sum over the group's channels c of xpad[n, c] cross-correlated with w[f, c].

    x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> y (N, F, OH, OW).
    relu=True returns relu_forward(y) (the kernels apply it in the convolution's epilogue).
    """
    x = _float_array(x, "x", 4)
    w = _float_array(w, "w", 4)
    s, p, groups, (oh, ow) = _conv_geometry(x.shape, w.shape, stride, pad, groups)
    n, c = x.shape[:2]
    f, cg, kh, kw = w.shape
    fg = f // groups
    win = _conv_windows(x, (kh, kw), s, p, (oh, ow))
    y = np.empty((n, f, oh, ow), dtype=np.result_type(x, w))
    for g in range(groups):
        cols = win[:, g * cg:(g + 1) * cg]                          # (N, Cg, OH, OW, KH, KW)
        wg = w[g * fg:(g + 1) * fg]                                 # (Fg, Cg, KH, KW)
        yg = np.tensordot(cols, wg, axes=([1, 4, 5], [1, 2, 3]))    # (N, OH, OW, Fg)
        y[:, g * fg:(g + 1) * fg] = yg.transpose(0, 3, 1, 2)
    if b is not None:
        b = _float_array(b, "b", 1)
        if b.shape != (f,):
            raise ValueError(f"bias must have shape ({f},), got {b.shape}")
        y += b[None, :, None, None]
    if relu:
        np.maximum(y, y.dtype.type(0), out=y)
    return y


def _check_dy(dy, expected, what):
    if dy.shape != tuple(expected):
        raise ValueError(f"dy has shape {dy.shape}, {what} gives output shape {tuple(expected)}")


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1):
    """dx[n, c, r, s] = sum over (f, i, j, p, q) with r = i*sh + p - ph, s = j*sw + q - pw
    of dy[n, f, i, j] * w[f, c, p, q] (the transposed convolution): im2col in reverse.

    dy (N, F, OH, OW), w (F, C/groups, KH, KW), x_shape (N, C, H, W) -> dx (N, C, H, W).
    """
    dy = _float_array(dy, "dy", 4)
    w = _float_array(w, "w", 4)
    n, c, h, wd = _shape4(x_shape, "x_shape")
    (sh, sw), (ph, pw), groups, (oh, ow) = _conv_geometry((n, c, h, wd), w.shape, stride, pad, groups)
    f, cg, kh, kw = w.shape
    fg = f // groups
    _check_dy(dy, (n, f, oh, ow), f"x_shape {(n, c, h, wd)} with weight {w.shape}")
    # dcols[p, q, n, c, i, j]: the gradient of every receptive-field element, laid out
    # so that each kernel offset (p, q) is one contiguous block.
    dcols = np.empty((kh, kw, n, c, oh, ow), dtype=np.result_type(dy, w))
    for g in range(groups):
        dg = np.tensordot(w[g * fg:(g + 1) * fg], dy[:, g * fg:(g + 1) * fg], axes=([0], [1]))
        dcols[:, :, :, g * cg:(g + 1) * cg] = dg.transpose(1, 2, 3, 0, 4, 5)   # from (Cg, KH, KW, N, OH, OW)
    # Add every kernel offset's gradients back onto the padded image (col2im).
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dxp[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw] += dcols[p, q]
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + wd])


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1):
    """dw[f, c, p, q] = sum over (n, i, j) of dy[n, f, i, j] * xpad[n, g*C/groups + c, i*sh + p, j*sw + q].

    dy (N, F, OH, OW), x (N, C, H, W), w_shape (F, C/groups, KH, KW) -> dw (F, C/groups, KH, KW).
    """
    dy = _float_array(dy, "dy", 4)
    x = _float_array(x, "x", 4)
    w_shape = _shape4(w_shape, "w_shape")
    s, p, groups, (oh, ow) = _conv_geometry(x.shape, w_shape, stride, pad, groups)
    f, cg, kh, kw = w_shape
    fg = f // groups
    _check_dy(dy, (x.shape[0], f, oh, ow), f"input {x.shape} with weight shape {w_shape}")
    win = _conv_windows(x, (kh, kw), s, p, (oh, ow))
    dw = np.empty(w_shape, dtype=np.result_type(dy, x))
    for g in range(groups):
        dw[g * fg:(g + 1) * fg] = np.tensordot(dy[:, g * fg:(g + 1) * fg], win[:, g * cg:(g + 1) * cg],
                                               axes=([0, 2, 3], [0, 2, 3]))
    return dw


def conv2d_backward_bias(dy):
    """db[f] = sum over (n, i, j) of dy[n, f, i, j].  dy (N, F, OH, OW) -> (F,)."""
    dy = _float_array(dy, "dy", 4)
    return dy.sum(axis=(0, 2, 3))


# --- fully connected ------------------------------------------------------

def _fc_check(x, w, xname="x"):
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{xname} has {x.shape[1]} features, weight {w.shape} expects {w.shape[1]}")


def fc_forward(x, w, b=None):
    """y = x @ w.T + b.  x (N, in), w (out, in), b (out,) or None -> y (N, out)."""
    x = _float_array(x, "x (reshape activations to (N, features))", 2)
    w = _float_array(w, "w", 2)
    _fc_check(x, w)
    y = x @ w.T
    if b is not None:
        b = _float_array(b, "b", 1)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
        y += b
    return y


def fc_backward_data(dy, w):
    """dx = dy @ w.  dy (N, out), w (out, in) -> dx (N, in)."""
    dy = _float_array(dy, "dy", 2)
    w = _float_array(w, "w", 2)
    if dy.shape[1] != w.shape[0]:
        raise ValueError(f"dy has {dy.shape[1]} features, weight {w.shape} has {w.shape[0]} outputs")
    return dy @ w


def fc_backward_filter(dy, x):
    """dw = dy.T @ x.  dy (N, out), x (N, in) -> dw (out, in)."""
    dy = _float_array(dy, "dy", 2)
    x = _float_array(x, "x", 2)
    if dy.shape[0] != x.shape[0]:
        raise ValueError(f"dy has batch {dy.shape[0]}, x has batch {x.shape[0]}")
    return dy.T @ x


def fc_backward_bias(dy):
    """db = sum of dy over the batch.  dy (N, out) -> (out,)."""
    dy = _float_array(dy, "dy", 2)
    return dy.sum(axis=0)


# --- local response normalization -----------------------------------------

def _lrn_check(size, alpha, beta, k):
    _int(size, "LRN size", 1)
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"LRN {name} must be a finite number, got {v!r}")


def _channel_window_sum(a, size):
    """s[:, c] = sum of a[:, j] for j from max(0, c - size//2) to min(C-1, c + size//2)."""
    half, c = size // 2, a.shape[1]
    s = np.zeros_like(a)
    for d in range(-half, half + 1):
        lo, hi = max(0, -d), min(c, c - d)
        if lo < hi:
            s[:, lo:hi] += a[:, lo + d:hi + d]
    return s


def _lrn_denominator(x, size, alpha, k):
    """d = k + alpha * (windowed sum of x^2 over channels), in x's dtype."""
    dt = x.dtype.type
    return dt(k) + dt(alpha) * _channel_window_sum(x * x, size)


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """y[:, c] = x[:, c] / (k + alpha * sum_{j near c} x[:, j]^2) ** beta.  x (N, C, H, W) -> y, same shape."""
    x = _float_array(x, "x", 4)
    _lrn_check(size, alpha, beta, k)
    d = _lrn_denominator(x, size, alpha, k)
    return x * d ** x.dtype.type(-beta)


def lrn_backward(dy, x, y, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """dx[j] = dy[j] * d[j]^-beta - 2*alpha*beta * x[j] * sum_{c near j} dy[c] * y[c] / d[c],

    where d = k + alpha * (windowed sum of x^2); the window is symmetric, so "c near j"
    is the same set as "j near c". The first term is the direct path, the second the
    cross term through every denominator x[j] appears in.
    """
    dy = _float_array(dy, "dy", 4)
    x = _float_array(x, "x", 4)
    y = _float_array(y, "y", 4)
    if not (dy.shape == x.shape == y.shape):
        raise ValueError(f"dy {dy.shape}, x {x.shape} and y {y.shape} must have the same shape")
    _lrn_check(size, alpha, beta, k)
    dt = np.result_type(dy, x, y).type
    d = _lrn_denominator(x.astype(dt, copy=False), size, alpha, k)
    cross = _channel_window_sum(dy * y / d, size)
    return dy * d ** dt(-beta) - dt(2 * alpha * beta) * x * cross


# --- pooling --------------------------------------------------------------

def pool_output_size(n, size, stride):
    """Pooling output length for n >= size: ceil((n - size) / stride) + 1, less one when that
    last window would start outside the input (possible only for stride > size). This is
    PyTorch's ceil mode without padding; the last window may be clipped at the border."""
    n, size, stride = _int(n, "input size", 1), _int(size, "pool size", 1), _int(stride, "pool stride", 1)
    if n < size:
        raise ValueError(f"pooling window {size} is larger than the input {n}")
    out = -(-(n - size) // stride) + 1
    if (out - 1) * stride >= n:   # a last window starting outside the input is dropped
        out -= 1
    return out


def _pool_geometry(shape, size, stride):
    n, c, h, w = shape
    oh, ow = pool_output_size(h, size, stride), pool_output_size(w, size, stride)
    # Padded extent that holds the input and every (unclipped) window.
    return (oh, ow), (max(h, (oh - 1) * stride + size), max(w, (ow - 1) * stride + size))


def _offset_view(a, p, q, stride, out):
    """a[:, :, p + i*stride, q + j*stride] for i < OH, j < OW, as a view."""
    oh, ow = out
    return a[:, :, p:p + stride * (oh - 1) + 1:stride, q:q + stride * (ow - 1) + 1:stride]


def maxpool_forward(x, size=3, stride=2):
    """y[n, c, i, j] = max of x[n, c] over the (clipped) window at (i*stride, j*stride).  x (N, C, H, W)."""
    x = _float_array(x, "x", 4)
    out, (hp, wp) = _pool_geometry(x.shape, size, stride)
    xp = np.full(x.shape[:2] + (hp, wp), -np.inf, dtype=x.dtype)
    xp[:, :, :x.shape[2], :x.shape[3]] = x
    y = _offset_view(xp, 0, 0, stride, out).copy()
    for p in range(size):
        for q in range(size):
            np.maximum(y, _offset_view(xp, p, q, stride, out), out=y)
    return y


def maxpool_backward(dy, x, y, size=3, stride=2):
    """dx: each window's dy goes to the window's first maximal element (row-major); overlaps add.

    y (the forward output) is accepted for the kernels' signature; the reference finds
    the maxima in x itself.
    """
    dy = _float_array(dy, "dy", 4)
    x = _float_array(x, "x", 4)
    y = _float_array(y, "y", 4)
    out, (hp, wp) = _pool_geometry(x.shape, size, stride)
    expected = x.shape[:2] + out
    if dy.shape != expected or y.shape != expected:
        raise ValueError(f"dy {dy.shape} and y {y.shape} must have the pooled shape {expected}")
    n, c, h, w = x.shape
    xp = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
    xp[:, :, :h, :w] = x
    # Offset (p, q) = (0, 0) is always inside the image; later offsets win only when strictly larger.
    # The window maxima, then each offset in row-major order claims the windows whose
    # maximum it holds and that no earlier offset claimed (ties -> first maximum).
    best = _offset_view(xp, 0, 0, stride, out).copy()
    for p in range(size):
        for q in range(size):
            np.maximum(best, _offset_view(xp, p, q, stride, out), out=best)
    dxp = np.zeros((n, c, hp, wp), dtype=np.result_type(dy, x))
    taken = np.zeros(best.shape, dtype=bool)
    hit = np.empty(best.shape, dtype=bool)
    for p in range(size):
        for q in range(size):
            np.equal(_offset_view(xp, p, q, stride, out), best, out=hit)
            np.greater(hit, taken, out=hit)          # hit and not taken
            taken |= hit
            view = _offset_view(dxp, p, q, stride, out)
            view += dy * hit
    return np.ascontiguousarray(dxp[:, :, :h, :w])


def _avgpool_counts(h, w, size, stride, out, dtype):
    """Number of in-image elements of every clipped window, shape (OH, OW)."""
    oh, ow = out
    rows = np.minimum(np.arange(oh) * stride + size, h) - np.arange(oh) * stride
    cols = np.minimum(np.arange(ow) * stride + size, w) - np.arange(ow) * stride
    return np.outer(rows, cols).astype(dtype)


def avgpool_forward(x, size=3, stride=2):
    """y[n, c, i, j] = mean of x[n, c] over the in-image part of the window at (i*stride, j*stride)."""
    x = _float_array(x, "x", 4)
    out, (hp, wp) = _pool_geometry(x.shape, size, stride)
    n, c, h, w = x.shape
    xp = np.zeros((n, c, hp, wp), dtype=x.dtype)
    xp[:, :, :h, :w] = x
    y = np.zeros((n, c) + out, dtype=x.dtype)
    for p in range(size):
        for q in range(size):
            y += _offset_view(xp, p, q, stride, out)
    return y / _avgpool_counts(h, w, size, stride, out, x.dtype)


def avgpool_backward(dy, x_shape, size=3, stride=2):
    """dx: every in-image element of a window receives dy / (in-image elements of the window); overlaps add."""
    dy = _float_array(dy, "dy", 4)
    n, c, h, w = _shape4(x_shape, "x_shape")
    out, (hp, wp) = _pool_geometry((n, c, h, w), size, stride)
    if dy.shape != (n, c) + out:
        raise ValueError(f"dy has shape {dy.shape}, pooling {(n, c, h, w)} gives {(n, c) + out}")
    share = dy / _avgpool_counts(h, w, size, stride, out, dy.dtype)
    dxp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    for p in range(size):
        for q in range(size):
            _offset_view(dxp, p, q, stride, out)[...] += share
    return np.ascontiguousarray(dxp[:, :, :h, :w])


# --- activations ----------------------------------------------------------

def _same_shape(a, b, an, bn):
    if a.shape != b.shape:
        raise ValueError(f"{an} {a.shape} and {bn} {b.shape} must have the same shape")


def relu_forward(x):
    """y = max(0, x)."""
    x = _float_array(x, "x")
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0."""
    dy, y = _float_array(dy, "dy"), _float_array(y, "y")
    _same_shape(dy, y, "dy", "y")
    return np.where(y > 0, dy, dy.dtype.type(0))


def tanh_forward(x):
    """y = tanh(x)."""
    return np.tanh(_float_array(x, "x"))


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2)."""
    dy, y = _float_array(dy, "dy"), _float_array(y, "y")
    _same_shape(dy, y, "dy", "y")
    return dy * (1 - y * y)


# --- counter-based random numbers and dropout -----------------------------

_M32 = np.uint64(0xFFFFFFFF)
_PHILOX_M0, _PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_PHILOX_W0, _PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def _uint32_words(a, name, words):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.ndim == 0 or a.shape[-1] != words:
        raise ValueError(f"{name} must have shape (..., {words}), got {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 0xFFFFFFFF):
        raise ValueError(f"{name} words must lie in [0, 2^32)")
    return a.astype(np.uint64)


def philox4x32_10(counter, key):
    """Random123's Philox4x32-10: counter (..., 4) and key (..., 2) of uint32 -> (..., 4) uint32.

    Each of the ten rounds multiplies words 0 and 2 by 0xD2511F53 and 0xCD9E8D57 into
    64-bit products (hi, lo) and sets
        (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    the key is bumped by the Weyl constants (0x9E3779B9, 0xBB67AE85) between rounds.
    counter and key broadcast against each other.
    """
    c = _uint32_words(counter, "counter", 4)
    k = _uint32_words(key, "key", 2)
    c0, c1, c2, c3, k0, k1 = np.broadcast_arrays(c[..., 0], c[..., 1], c[..., 2], c[..., 3],
                                                 k[..., 0], k[..., 1])
    for r in range(10):
        if r:
            k0 = (k0 + _PHILOX_W0) & _M32
            k1 = (k1 + _PHILOX_W1) & _M32
        p0 = c0 * _PHILOX_M0             # < 2^64: exact in uint64
        p1 = c2 * _PHILOX_M1
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _M32
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _check_p(p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout probability must be a number, got {p!r}")
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return float(p)


def _check_seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"dropout seed must be an int, got {seed!r}")
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"dropout seed must lie in [0, 2^64), got {seed}")
    return int(seed)


def dropout_threshold(p):
    """The uint32 t with P(word >= t) = 1 - p for a uniform uint32 word: min(round(p * 2^32), 2^32 - 1)."""
    p = _check_p(p)
    return np.uint32(min(round(p * 2 ** 32), 2 ** 32 - 1))


def dropout_mask(shape, p, seed, offset=0):
    """Boolean keep mask of the given shape: element i (flat C-order) is kept when
    philox4x32_10((g mod 2^32, g >> 32, 0, 0), (seed mod 2^32, seed >> 32))[0] >= dropout_threshold(p)
    with g = offset + i (an offset lets a tensor be the rows of a larger one: data parallelism)."""
    threshold = dropout_threshold(p)
    seed = _check_seed(seed)
    shape = tuple(_int(s, "shape", 0) for s in shape)
    offset = _int(offset, "offset", 0)
    i = np.arange(math.prod(shape), dtype=np.uint64) + np.uint64(offset)
    zero = np.zeros_like(i)
    counter = np.stack([i & _M32, i >> np.uint64(32), zero, zero], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    return (philox4x32_10(counter, key)[:, 0] >= threshold).reshape(shape)


def dropout_forward(x, p, seed, offset=0):
    """Inverted dropout: y = x / (1 - p) where dropout_mask(x.shape, p, seed, offset) keeps, else 0."""
    x = _float_array(x, "x")
    keep = dropout_mask(x.shape, p, seed, offset)
    return np.where(keep, x * x.dtype.type(1.0 / (1.0 - p)), x.dtype.type(0))


def dropout_backward(dy, p, seed, offset=0):
    """dx = dy / (1 - p) where the (regenerated) mask keeps, else 0."""
    return dropout_forward(dy, p, seed, offset)


# --- softmax, cross-entropy, top-k ----------------------------------------

def _check_labels(labels, logits):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    n, c = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), got values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.intp)


def softmax_forward(logits):
    """p[n, c] = exp(z[n, c] - max_c z[n]) / sum_c exp(z[n, c] - max_c z[n]).  logits (N, C)."""
    z = _float_array(logits, "logits", 2)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels):
    """(mean over rows of -log softmax(z)[n, label[n]], softmax(z)); the loss is a scalar of z's dtype."""
    z = _float_array(logits, "logits", 2)
    labels = _check_labels(labels, z)
    shifted = z - z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(z.shape[0])
    loss = np.mean(log_sum - shifted[rows, labels])
    probs = np.exp(shifted - log_sum[:, None])
    return z.dtype.type(loss), probs


def softmax_cross_entropy_backward(probs, labels):
    """dL/dz = (probs - onehot(labels)) / N for the mean loss.  probs (N, C) -> (N, C)."""
    probs = _float_array(probs, "probs", 2)
    labels = _check_labels(labels, probs)
    d = probs.copy()
    d[np.arange(probs.shape[0]), labels] -= 1
    return d / probs.dtype.type(max(probs.shape[0], 1))


def topk_errors(logits, labels, k):
    """Number of rows whose label has k or more classes with a strictly larger score (an int)."""
    z = _float_array(logits, "logits", 2)
    labels = _check_labels(labels, z)
    k = _int(k, "k", 1)
    label_score = z[np.arange(z.shape[0]), labels]
    larger = (z > label_score[:, None]).sum(axis=1)
    return int((larger >= k).sum())


# --- SGD ------------------------------------------------------------------

def sgd_update(w, dw, v, lr, momentum=0.9, weight_decay=0.0005):
    """In place, the paper's rule: v <- momentum*v - weight_decay*lr*w - lr*dw ; w <- w + v. Returns None."""
    for name, a in (("w", w), ("v", v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"sgd_update updates {name} in place: it must be a NumPy array, got {type(a).__name__}")
    w, dw, v = _float_array(w, "w"), _float_array(dw, "dw"), _float_array(v, "v")
    if not (w.shape == dw.shape == v.shape):
        raise ValueError(f"w {w.shape}, dw {dw.shape} and v {v.shape} must have the same shape")
    for name, val in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if not isinstance(val, (int, float, np.integer, np.floating)) or not math.isfinite(val):
            raise ValueError(f"{name} must be a finite number, got {val!r}")
    dt = v.dtype.type
    v *= dt(momentum)
    v -= dt(weight_decay * lr) * w
    v -= dt(lr) * dw
    w += v


# --- fused pairs: the compositions the fused kernels compute ------------------

def _lrn_blocks(x, groups):
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels must be divisible by groups={groups}")
    step = x.shape[1] // groups
    return [np.ascontiguousarray(x[:, g * step:(g + 1) * step]) for g in range(groups)]


def window_argmax(z, size, stride):
    """uint8 (N, C, OH, OW): the row-major position (row * size + column, within the window)
    of the first maximum of every (clipped) pooling window of z."""
    z = _float_array(z, "z", 4)
    if size * size > 256:
        raise ValueError(f"pool size {size}: a one-byte argmax needs size^2 <= 256")
    out, (hp, wp) = _pool_geometry(z.shape, size, stride)
    n, c, h, w = z.shape
    zp = np.full((n, c, hp, wp), -np.inf, dtype=z.dtype)
    zp[:, :, :h, :w] = z
    best = _offset_view(zp, 0, 0, stride, out).copy()
    arg = np.zeros(best.shape, dtype=np.uint8)
    for p in range(size):
        for q in range(size):
            v = _offset_view(zp, p, q, stride, out)
            better = v > best
            best[better] = v[better]
            arg[better] = p * size + q
    return arg


def lrn_maxpool_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2, groups=1):
    """(maxpool_forward(lrn(x)), window_argmax(lrn(x))): LRN within each of `groups` channel
    blocks, then max pooling; the argmax is what the backward needs."""
    x = _float_array(x, "x", 4)
    z = np.concatenate([lrn_forward(g, size, alpha, beta, k) for g in _lrn_blocks(x, groups)], axis=1)
    return maxpool_forward(z, pool_size, pool_stride), window_argmax(z, pool_size, pool_stride)


def lrn_maxpool_backward(dy, x, arg, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2,
                         groups=1):
    """The gradient of lrn_maxpool_forward with respect to x: each window's dy goes to the
    position `arg` names (overlaps add), then through the LRN, recomputed from x."""
    dy, x = _float_array(dy, "dy", 4), _float_array(x, "x", 4)
    arg = np.asarray(arg)
    out, (hp, wp) = _pool_geometry(x.shape, pool_size, pool_stride)
    n, c, h, w = x.shape
    if dy.shape != (n, c) + out or arg.shape != dy.shape:
        raise ValueError(f"dy {dy.shape} and arg {arg.shape} must have the pooled shape {(n, c) + out}")
    dzp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    for p in range(pool_size):
        for q in range(pool_size):
            _offset_view(dzp, p, q, pool_stride, out)[...] += np.where(arg == p * pool_size + q, dy, 0)
    dz = dzp[:, :, :h, :w]
    parts = []
    for d, xx in zip(_lrn_blocks(dz, groups), _lrn_blocks(x, groups)):
        parts.append(lrn_backward(d, xx, lrn_forward(xx, size, alpha, beta, k), size, alpha, beta, k))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def relu_dropout_forward(x, p, seed, offset=0):
    """dropout_forward(relu_forward(x), p, seed, offset)."""
    return dropout_forward(relu_forward(x), p, seed, offset)


def relu_dropout_backward(dy, y, p):
    """The gradient of relu_dropout_forward from its output y: dy / (1 - p) where y > 0, else 0
    (y > 0 exactly where the mask kept a positive input, so no seed is needed)."""
    dy, y = _float_array(dy, "dy"), _float_array(y, "y")
    _same_shape(dy, y, "dy", "y")
    _check_p(p)
    return np.where(y > 0, dy * dy.dtype.type(1.0 / (1.0 - p)), dy.dtype.type(0))
