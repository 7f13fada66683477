"""The functional API: one plain function per op, run on a device.

    from convnet import ops, backend
    y = ops.lrn_forward(x)                          # NumPy in -> the NumPy reference
    y = ops.lrn_forward(x, backend=backend.emu())   # the CUDA kernel on the CPU emulation
    y = ops.lrn_forward(x_gpu)                      # CuPy in -> the CUDA kernel on its GPU

Every op has the signature of the same name in convnet.reference plus a
keyword `backend`: a device of convnet.backend, or None for the device the
arrays live on (backend.of). A device that runs kernels (emulated or GPU)
calls the launcher in convnet/kernel_ops/<family>.py; the host runs the fast
CPU version of convnet/cpu_ops.py where there is one (tested against the
reference), else the NumPy reference. Arrays that are not on the device ->
ValueError, before any work.
Conventions are in docs/design.md.

The conv and fc products take `precision` ("fp32", "tf32" or "bf16",
convnet/precision.py): on a kernel device tf32/bf16 run the tensor-core kernels
(kernel_ops/conv_tc.py, gemm_tc.py); on the host the reference runs on inputs
rounded the same way (a model of the rounding, not of the summation order).
"""
from convnet import backend as _backend
from convnet import cpu_ops, reference
from convnet.kernel_ops import activation, conv, conv_tc, dropout, fused, gemm, gemm_tc, lrn, pool, sgd, softmax
from convnet.precision import check_precision, round_to

pool_output_size = reference.pool_output_size
conv_output_size = reference.conv_output_size


def _on(device, *arrays):
    """The device an op runs on, after checking that its arrays live there."""
    if device is None:
        return _backend.of(*arrays)
    if not isinstance(device, _backend.Device):
        raise TypeError(f"backend must be a device of convnet.backend (e.g. backend.emu()) or None, "
                        f"got {device!r}")
    for a in arrays:
        if a is not None and hasattr(a, "dtype") and not device.owns(a):
            raise ValueError(f"an array on {_backend.of(a).name} was given to an op on {device.name}: "
                             "copy it to that device first")
    return device


# --- convolution (kernels/conv.cu) --------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, relu=False, *, precision="fp32", backend=None):
    dev = _on(backend, x, w, b)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return conv_tc.conv2d_forward(x, w, b, stride, pad, groups, relu=relu, precision=precision)
        x, w = round_to(x, precision), round_to(w, precision)
    if dev.runs_kernels:
        return conv.conv2d_forward(x, w, b, stride, pad, groups, relu=relu)
    return cpu_ops.conv2d_forward(x, w, b, stride, pad, groups, relu=relu)


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1, *, precision="fp32", backend=None):
    dev = _on(backend, dy, w)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return conv_tc.conv2d_backward_data(dy, w, x_shape, stride, pad, groups, precision=precision)
        dy, w = round_to(dy, precision), round_to(w, precision)
    if dev.runs_kernels:
        return conv.conv2d_backward_data(dy, w, x_shape, stride, pad, groups)
    return cpu_ops.conv2d_backward_data(dy, w, x_shape, stride, pad, groups)


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, *, precision="fp32", backend=None):
    dev = _on(backend, dy, x)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return conv_tc.conv2d_backward_filter(dy, x, w_shape, stride, pad, groups, precision=precision)
        dy, x = round_to(dy, precision), round_to(x, precision)
    if dev.runs_kernels:
        return conv.conv2d_backward_filter(dy, x, w_shape, stride, pad, groups)
    return cpu_ops.conv2d_backward_filter(dy, x, w_shape, stride, pad, groups)


def conv2d_backward_bias(dy, *, backend=None):
    if _on(backend, dy).runs_kernels:
        return conv.conv2d_backward_bias(dy)
    return cpu_ops.conv2d_backward_bias(dy)


# --- fully connected (kernels/gemm.cu) -----------------------------------------------------

def fc_forward(x, w, b=None, *, precision="fp32", backend=None):
    dev = _on(backend, x, w, b)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return gemm_tc.fc_forward(x, w, b, precision=precision)
        x, w = round_to(x, precision), round_to(w, precision)
    if dev.runs_kernels:
        return gemm.fc_forward(x, w, b)
    return cpu_ops.fc_forward(x, w, b)


def fc_backward_data(dy, w, *, precision="fp32", backend=None):
    dev = _on(backend, dy, w)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return gemm_tc.fc_backward_data(dy, w, precision=precision)
        dy, w = round_to(dy, precision), round_to(w, precision)
    if dev.runs_kernels:
        return gemm.fc_backward_data(dy, w)
    return cpu_ops.fc_backward_data(dy, w)


def fc_backward_filter(dy, x, *, precision="fp32", backend=None):
    dev = _on(backend, dy, x)
    if check_precision(precision) != "fp32":
        if dev.runs_kernels:
            return gemm_tc.fc_backward_filter(dy, x, precision=precision)
        dy, x = round_to(dy, precision), round_to(x, precision)
    if dev.runs_kernels:
        return gemm.fc_backward_filter(dy, x)
    return cpu_ops.fc_backward_filter(dy, x)


def fc_backward_bias(dy, *, backend=None):
    if _on(backend, dy).runs_kernels:
        return gemm.fc_backward_bias(dy)
    return reference.fc_backward_bias(dy)


# --- local response normalization (kernels/lrn.cu) ---------------------------------------

def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, *, backend=None):
    if _on(backend, x).runs_kernels:
        return lrn.lrn_forward(x, size, alpha, beta, k)
    return reference.lrn_forward(x, size, alpha, beta, k)


def lrn_backward(dy, x, y, size=5, alpha=1e-4, beta=0.75, k=2.0, *, backend=None):
    if _on(backend, dy, x, y).runs_kernels:
        return lrn.lrn_backward(dy, x, y, size, alpha, beta, k)
    return reference.lrn_backward(dy, x, y, size, alpha, beta, k)


# --- pooling (kernels/pool.cu) -------------------------------------------------------------

def maxpool_forward(x, size=3, stride=2, *, argmax=False, backend=None):
    """argmax=True (host only): (y, the position of each window's first maximum), which
    maxpool_backward(argmax=) uses instead of finding the maxima again."""
    if _on(backend, x).runs_kernels:
        if argmax:
            raise ValueError("maxpool_forward: argmax is an option of the host's CPU version")
        return pool.maxpool_forward(x, size, stride)
    return cpu_ops.maxpool_forward(x, size, stride, argmax=argmax)


def maxpool_backward(dy, x, y, size=3, stride=2, *, argmax=None, backend=None):
    if _on(backend, dy, x, y).runs_kernels:
        if argmax is not None:
            raise ValueError("maxpool_backward: argmax is an option of the host's CPU version")
        return pool.maxpool_backward(dy, x, y, size, stride)
    return cpu_ops.maxpool_backward(dy, x, y, size, stride, argmax=argmax)


def avgpool_forward(x, size=3, stride=2, *, backend=None):
    if _on(backend, x).runs_kernels:
        return pool.avgpool_forward(x, size, stride)
    return reference.avgpool_forward(x, size, stride)


def avgpool_backward(dy, x_shape, size=3, stride=2, *, backend=None):
    if _on(backend, dy).runs_kernels:
        return pool.avgpool_backward(dy, x_shape, size, stride)
    return reference.avgpool_backward(dy, x_shape, size, stride)


# --- activations (kernels/activation.cu) ------------------------------------------------------

def relu_forward(x, *, backend=None):
    if _on(backend, x).runs_kernels:
        return activation.relu_forward(x)
    return cpu_ops.relu_forward(x)


def relu_backward(dy, y, *, backend=None):
    if _on(backend, dy, y).runs_kernels:
        return activation.relu_backward(dy, y)
    return cpu_ops.relu_backward(dy, y)


def tanh_forward(x, *, backend=None):
    if _on(backend, x).runs_kernels:
        return activation.tanh_forward(x)
    return reference.tanh_forward(x)


def tanh_backward(dy, y, *, backend=None):
    if _on(backend, dy, y).runs_kernels:
        return activation.tanh_backward(dy, y)
    return reference.tanh_backward(dy, y)


# --- dropout (kernels/dropout.cu) ---------------------------------------------------------------

def dropout_forward(x, p, seed, offset=0, *, backend=None):
    """offset: the mask index of x's first element (a data-parallel rank's first row)."""
    if _on(backend, x).runs_kernels:
        return dropout.dropout_forward(x, p, seed, offset)
    return reference.dropout_forward(x, p, seed, offset)


def dropout_backward(dy, p, seed, offset=0, *, backend=None):
    if _on(backend, dy).runs_kernels:
        return dropout.dropout_backward(dy, p, seed, offset)
    return reference.dropout_backward(dy, p, seed, offset)


# --- fused pairs (kernels/fused.cu) ---------------------------------------------------------------

def lrn_maxpool_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2, groups=1, *,
                        backend=None):
    if _on(backend, x).runs_kernels:
        return fused.lrn_maxpool_forward(x, size, alpha, beta, k, pool_size, pool_stride, groups)
    return reference.lrn_maxpool_forward(x, size, alpha, beta, k, pool_size, pool_stride, groups)


def lrn_maxpool_backward(dy, x, arg, size=5, alpha=1e-4, beta=0.75, k=2.0, pool_size=3, pool_stride=2,
                         groups=1, *, backend=None):
    if _on(backend, dy, x, arg).runs_kernels:
        return fused.lrn_maxpool_backward(dy, x, arg, size, alpha, beta, k, pool_size, pool_stride, groups)
    return reference.lrn_maxpool_backward(dy, x, arg, size, alpha, beta, k, pool_size, pool_stride, groups)


def relu_dropout_forward(x, p, seed, offset=0, *, backend=None):
    """A non-zero offset (data parallelism) runs the ReLU and the dropout as two ops: the fused
    kernel has no offset; the result is the same bit for bit."""
    if offset:
        return dropout_forward(relu_forward(x, backend=backend), p, seed, offset, backend=backend)
    if _on(backend, x).runs_kernels:
        return fused.relu_dropout_forward(x, p, seed)
    return reference.relu_dropout_forward(x, p, seed)


def relu_dropout_backward(dy, y, p, *, backend=None):
    if _on(backend, dy, y).runs_kernels:
        return fused.relu_dropout_backward(dy, y, p)
    return reference.relu_dropout_backward(dy, y, p)


# --- softmax, loss, errors (kernels/softmax.cu) -----------------------------------------------------

def softmax_forward(logits, *, backend=None):
    if _on(backend, logits).runs_kernels:
        return softmax.softmax_forward(logits)
    return reference.softmax_forward(logits)


def softmax_cross_entropy(logits, labels, *, backend=None):
    if _on(backend, logits, labels).runs_kernels:
        return softmax.softmax_cross_entropy(logits, labels)
    return reference.softmax_cross_entropy(logits, labels)


def softmax_cross_entropy_backward(probs, labels, *, backend=None):
    if _on(backend, probs, labels).runs_kernels:
        return softmax.softmax_cross_entropy_backward(probs, labels)
    return reference.softmax_cross_entropy_backward(probs, labels)


def topk_errors(logits, labels, k, *, backend=None):
    if _on(backend, logits, labels).runs_kernels:
        return softmax.topk_errors(logits, labels, k)
    return reference.topk_errors(logits, labels, k)


# --- the update (kernels/sgd.cu) --------------------------------------------------------------------

def sgd_update(w, dw, v, lr, momentum=0.9, weight_decay=0.0005, *, backend=None):
    if _on(backend, w, dw, v).runs_kernels:
        return sgd.sgd_update(w, dw, v, lr, momentum, weight_decay)
    return cpu_ops.sgd_update(w, dw, v, lr, momentum, weight_decay)


OPS = sorted(name for name, f in list(globals().items())
             if callable(f) and not name.startswith("_") and f.__module__ == __name__)
for _name in OPS:                   # each op documents itself with its reference's docstring
    _extra = globals()[_name].__doc__
    globals()[_name].__doc__ = getattr(reference, _name).__doc__ + (f"\n\n{_extra.strip()}" if _extra else "")
