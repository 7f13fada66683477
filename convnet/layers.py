"""Layers: one forward/backward interface for every layer type, on a device.

    layer = make_layer(spec, in_shapes, device)    # spec: one LAYERS dict; device: convnet.backend
    y = layer.forward(inputs, train)               # inputs: list of arrays, one per spec input
    dinputs = layer.backward(dy)                   # list, one per input; parameter
                                                   # gradients go to layer.params[k].grad

Shapes exclude the batch: (C, H, W) for images, (features,) for fc outputs.
Every computation goes through convnet.ops on the layer's device (on the
host the fast CPU ops of convnet/cpu_ops.py, or the CUDA kernels on an
emulated device or a GPU). A layer holds what its backward needs from the
last forward (its inputs or outputs; on the host also a max pool's argmax), nothing else, and
knows nothing of its neighbours.

Several inputs are concatenated along channels (conv; they must share H x W)
or along flattened features (fc), in the order the spec lists them; the
backward pass splits the gradient the same way.

A conv layer with a ReLU neuron runs it in the convolution (ops.conv2d_forward
with relu=True: on the kernels, bias and ReLU in the epilogue). The fused
layers at the end of this file (LRNMaxPool, ReLUDropout) are not written in
configs: the Net's fusion pass (convnet/net.py, `fuse_layers`) puts them in
place of the pairs they run as one kernel.

Output sizes: conv (H + 2*pad - K) // stride + 1 (reference.conv_output_size);
pooling reference.pool_output_size, as in docs/design.md.
"""
import math

import numpy as np

from convnet import backend as _backend
from convnet import cpu_ops, ops, reference

NEURONS = ("relu", "tanh")
COMMON_KEYS = ("name", "type", "inputs", "column")


class Param:
    """A trainable tensor: .name ("conv1a.w"), .shape, .value, .grad, .layer (layer name),
    .hyper ({"lr_mult", "weight_decay", "momentum"}), .device (the convnet.backend device
    holding .value and .grad)."""

    def __init__(self, name, shape, layer, hyper=None, device=None):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.layer = layer
        self.hyper = dict(hyper or {})
        self.device = device
        self.value = None
        self.grad = None

    @property
    def size(self):
        return math.prod(self.shape)

    def __repr__(self):
        return f"Param({self.name!r}, shape={self.shape}, device={getattr(self.device, 'name', None)})"


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


class Layer:
    """Base class. Subclasses set `kind`, `required`, `optional` ({key: default}),
    `n_inputs` ((min, max); max None = any) and implement setup/forward/backward."""

    kind = ""
    required = ()
    optional = {}
    n_inputs = (1, 1)
    has_neurons = False        # counted in Net.num_neurons (conv and fc)
    needs_seed = False         # the net sets .seed before each training forward (dropout)
    members = None             # fused layers: the names of the config layers they run
    precision = "fp32"         # conv and fc products (convnet/precision.py); Net sets it

    def __init__(self, spec, in_shapes, device=None):
        self.name = spec["name"]
        self.spec = dict(spec)
        self.device = device if device is not None else _backend.cpu()
        self.xp = self.device.xp
        self.column = spec.get("column", 0)
        inputs = spec.get("inputs", [])
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self.in_shapes = [tuple(int(d) for d in s) for s in in_shapes]
        allowed = set(COMMON_KEYS) | set(self.required) | set(self.optional)
        for key in spec:
            if key not in allowed:
                raise self.error(f"unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")
        for key in self.required:
            if key not in spec:
                raise self.error(f"missing key '{key}'")
        self.opts = {**self.optional, **{k: spec[k] for k in spec if k not in COMMON_KEYS}}
        lo, hi = self.n_inputs
        n = len(self.inputs)
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise self.error(f"takes {want} input(s), got {n}")
        self.params = {}                 # local name ("w", "b") -> Param, filled by setup
        self.out_shape = tuple(self.setup())

    # --- helpers --------------------------------------------------------
    def error(self, message):
        return ValueError(f"layer '{self.name}' ({self.kind}): {message}")

    def _int_opt(self, key, minimum):
        v = self.opts[key]
        if not _is_int(v) or v < minimum:
            raise self.error(f"{key} must be an int >= {minimum}, got {v!r}")
        return int(v)

    def _pair_opt(self, key, minimum):
        v = self.opts[key]
        pair = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
        if len(pair) != 2 or not all(_is_int(p) and p >= minimum for p in pair):
            raise self.error(f"{key} must be an int >= {minimum} or an (h, w) pair of them, got {v!r}")
        return int(pair[0]), int(pair[1])

    def _image_input(self):
        for src, s in zip(self.inputs, self.in_shapes):
            if len(s) != 3:
                raise self.error(f"input '{src}' must be an image (C x H x W), got shape {_fmt(s)}")
        return self.in_shapes[0]

    def _neuron(self):
        n = self.opts.get("neuron")
        if n is not None and n not in NEURONS:
            raise self.error(f"unknown neuron {n!r}: choose one of {', '.join(NEURONS)} or None")
        return n

    def _neuron_forward(self, y):
        if self.neuron == "relu":
            return ops.relu_forward(y, backend=self.device)
        if self.neuron == "tanh":
            return ops.tanh_forward(y, backend=self.device)
        return y

    def _neuron_backward(self, dy, y):
        if self.neuron == "relu":
            return ops.relu_backward(dy, y, backend=self.device)
        if self.neuron == "tanh":
            return ops.tanh_backward(dy, y, backend=self.device)
        return dy

    def _concat(self, inputs, flatten):
        if flatten:
            inputs = [x.reshape(x.shape[0], -1) for x in inputs]
        if len(inputs) == 1:
            return inputs[0]
        return self.xp.concatenate(inputs, axis=1)

    def _split(self, dx, need, flatten):
        """The gradient of the concatenated input back as one array per input (None where not needed)."""
        if len(self.in_shapes) == 1:
            return [dx.reshape((dx.shape[0],) + self.in_shapes[0]) if need[0] else None]
        out, start = [], 0
        for shape, wanted in zip(self.in_shapes, need):
            width = math.prod(shape) if flatten else shape[0]
            if wanted:
                part = self.xp.ascontiguousarray(dx[:, start:start + width])
                out.append(part.reshape((dx.shape[0],) + shape))
            else:
                out.append(None)
            start += width
        return out

    def _check_inputs(self, inputs):
        if len(inputs) != len(self.in_shapes):
            raise ValueError(f"layer '{self.name}': forward got {len(inputs)} inputs, expected {len(self.in_shapes)}")
        for src, x, s in zip(self.inputs, inputs, self.in_shapes):
            if tuple(x.shape[1:]) != s:
                raise ValueError(f"layer '{self.name}': input '{src}' has shape {tuple(x.shape)}, "
                                 f"expected N x {_fmt(s)}")

    # --- interface ------------------------------------------------------
    def setup(self):
        """Checks the options against the input shapes, creates self.params, returns the output shape."""
        raise NotImplementedError

    def describe(self):
        """A few words for the summary ("48 11x11 s4 relu")."""
        return ""

    def forward(self, inputs, train=True):
        raise NotImplementedError

    def backward(self, dy, need=None):
        """Gradients of the inputs (None where need[i] is False); parameter grads into .grad."""
        raise NotImplementedError

    def _need(self, need):
        return [True] * len(self.inputs) if need is None else list(need)

    def _require_forward(self, *names):
        for n in names:
            if getattr(self, n, None) is None:
                raise RuntimeError(f"layer '{self.name}': backward() before forward()")


def _fmt(shape):
    return "x".join(str(d) for d in shape)


class Data(Layer):
    """The network input: shape [C, H, W]; forward returns the batch as it is."""
    kind = "data"
    required = ("shape",)
    n_inputs = (0, 0)

    def setup(self):
        s = self.opts["shape"]
        if not isinstance(s, (list, tuple)) or len(s) not in (1, 3) or not all(_is_int(d) and d > 0 for d in s):
            raise self.error(f"shape must be [C, H, W] (or [features]) of positive ints, got {s!r}")
        return tuple(int(d) for d in s)

    def describe(self):
        return "input"

    def forward(self, inputs, train=True):
        return inputs[0]

    def backward(self, dy, need=None):
        return []


class Conv(Layer):
    """Convolution (cross-correlation) with bias, optional groups, optional ReLU/tanh after."""
    kind = "conv"
    required = ("filters", "size")
    optional = {"stride": 1, "pad": 0, "groups": 1, "neuron": None}
    n_inputs = (1, None)
    has_neurons = True

    def setup(self):
        self._image_input()
        hw = {s[1:] for s in self.in_shapes}
        if len(hw) > 1:
            raise self.error("inputs to concatenate must share H x W, got "
                             + ", ".join(f"'{n}' {_fmt(s)}" for n, s in zip(self.inputs, self.in_shapes)))
        c = sum(s[0] for s in self.in_shapes)
        _, h, w = self.in_shapes[0]
        f = self._int_opt("filters", 1)
        kh, kw = self._pair_opt("size", 1)
        self.stride = self._pair_opt("stride", 1)
        self.pad = self._pair_opt("pad", 0)
        self.groups = self._int_opt("groups", 1)
        self.neuron = self._neuron()
        if c % self.groups or f % self.groups:
            raise self.error(f"{c} input channels and {f} filters must both be divisible by groups={self.groups}")
        ph, pw = self.pad
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise self.error(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
        oh = reference.conv_output_size(h, kh, self.stride[0], ph)
        ow = reference.conv_output_size(w, kw, self.stride[1], pw)
        self.kernel = (kh, kw)
        self.params = {"w": Param(f"{self.name}.w", (f, c // self.groups, kh, kw), self.name),
                       "b": Param(f"{self.name}.b", (f,), self.name)}
        self.x = self.y = None
        return f, oh, ow

    def describe(self):
        s = f"{self.out_shape[0]} {self.kernel[0]}x{self.kernel[1]}"
        s += f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        s += f" p{self.pad[0]}" if self.pad[0] == self.pad[1] else f" p{self.pad}"
        if self.groups > 1:
            s += f" g{self.groups}"
        return s + (f" {self.neuron}" if self.neuron else "")

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        x = self._concat(inputs, flatten=False)
        w, b = self.params["w"].value, self.params["b"].value
        geo = dict(stride=self.stride, pad=self.pad, groups=self.groups)
        if self.neuron == "relu":               # bias + ReLU in the convolution's epilogue
            y = ops.conv2d_forward(x, w, b, **geo, relu=True, precision=self.precision, backend=self.device)
        else:
            y = self._neuron_forward(ops.conv2d_forward(x, w, b, **geo, precision=self.precision,
                                                        backend=self.device))
        self.x, self.y = x, y
        return y

    def backward(self, dy, need=None):
        self._require_forward("x", "y")
        need = self._need(need)
        dy = self._neuron_backward(dy, self.y)
        w = self.params["w"]
        w.grad = ops.conv2d_backward_filter(dy, self.x, w.shape, stride=self.stride, pad=self.pad,
                                            groups=self.groups, precision=self.precision, backend=self.device)
        self.params["b"].grad = ops.conv2d_backward_bias(dy, backend=self.device)
        dx = None
        if any(need):
            dx = ops.conv2d_backward_data(dy, w.value, self.x.shape, stride=self.stride, pad=self.pad,
                                          groups=self.groups, precision=self.precision, backend=self.device)
        return self._split(dx, need, flatten=False) if dx is not None else [None] * len(need)


class FC(Layer):
    """Fully connected: y = x @ w.T + b over the flattened, concatenated inputs; optional neuron."""
    kind = "fc"
    required = ("outputs",)
    optional = {"neuron": None}
    n_inputs = (1, None)
    has_neurons = True

    def setup(self):
        n_in = sum(math.prod(s) for s in self.in_shapes)
        n_out = self._int_opt("outputs", 1)
        self.neuron = self._neuron()
        self.params = {"w": Param(f"{self.name}.w", (n_out, n_in), self.name),
                       "b": Param(f"{self.name}.b", (n_out,), self.name)}
        self.x = self.y = None
        return (n_out,)

    def describe(self):
        return f"{self.out_shape[0]}" + (f" {self.neuron}" if self.neuron else "")

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        x = self._concat(inputs, flatten=True)
        w, b = self.params["w"].value, self.params["b"].value
        y = self._neuron_forward(ops.fc_forward(x, w, b, precision=self.precision, backend=self.device))
        self.x, self.y = x, y
        return y

    def backward(self, dy, need=None):
        self._require_forward("x", "y")
        need = self._need(need)
        dy = self._neuron_backward(dy, self.y)
        w = self.params["w"]
        w.grad = ops.fc_backward_filter(dy, self.x, precision=self.precision, backend=self.device)
        self.params["b"].grad = ops.fc_backward_bias(dy, backend=self.device)
        if not any(need):
            return [None] * len(need)
        return self._split(ops.fc_backward_data(dy, w.value, precision=self.precision,
                                                   backend=self.device), need, flatten=True)


class _Neuron(Layer):
    n_inputs = (1, 1)

    def setup(self):
        self.y = None
        return self.in_shapes[0]

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        self.y = self._forward(inputs[0])
        return self.y

    def backward(self, dy, need=None):
        self._require_forward("y")
        if not self._need(need)[0]:
            return [None]
        return [self._backward(dy, self.y)]


class ReLU(_Neuron):
    """y = max(0, x)."""
    kind = "relu"

    def _forward(self, x):
        return ops.relu_forward(x, backend=self.device)

    def _backward(self, dy, y):
        return ops.relu_backward(dy, y, backend=self.device)


class Tanh(_Neuron):
    """y = tanh(x)."""
    kind = "tanh"

    def _forward(self, x):
        return ops.tanh_forward(x, backend=self.device)

    def _backward(self, dy, y):
        return ops.tanh_backward(dy, y, backend=self.device)


class LRN(Layer):
    """Local response normalization across channels (the paper's: alpha on the plain sum).

    groups > 1 normalizes within each of `groups` equal channel blocks, as each
    column does on its own GPU (the one-device form of a two-column layer)."""
    kind = "lrn"
    optional = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, "groups": 1}

    def setup(self):
        c = self._image_input()[0]
        self.size = self._int_opt("size", 1)
        self.groups = self._int_opt("groups", 1)
        for key in ("alpha", "beta", "k"):
            if not _is_number(self.opts[key]) or self.opts[key] < 0:
                raise self.error(f"{key} must be a number >= 0, got {self.opts[key]!r}")
        self.alpha, self.beta, self.k = (float(self.opts[k]) for k in ("alpha", "beta", "k"))
        if c % self.groups:
            raise self.error(f"{c} channels must be divisible by groups={self.groups}")
        self.x = self.y = None
        return self.in_shapes[0]

    def describe(self):
        return (f"size {self.size} alpha {self.alpha:g} beta {self.beta:g} k {self.k:g}"
                + (f" g{self.groups}" if self.groups > 1 else ""))

    def _blocks(self, a):
        if self.groups == 1:
            return [a]
        step = a.shape[1] // self.groups
        return [self.xp.ascontiguousarray(a[:, g * step:(g + 1) * step]) for g in range(self.groups)]

    def _join(self, parts):
        return parts[0] if len(parts) == 1 else self.xp.concatenate(parts, axis=1)

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        x = inputs[0]
        kw = dict(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k, backend=self.device)
        y = self._join([ops.lrn_forward(xg, **kw) for xg in self._blocks(x)])
        self.x, self.y = x, y
        return y

    def backward(self, dy, need=None):
        self._require_forward("x", "y")
        if not self._need(need)[0]:
            return [None]
        kw = dict(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k, backend=self.device)
        parts = zip(self._blocks(dy), self._blocks(self.x), self._blocks(self.y))
        return [self._join([ops.lrn_backward(d, x, y, **kw) for d, x, y in parts])]


class Pool(Layer):
    """Max or average pooling over size x size windows with a stride; the last window may be clipped."""
    kind = "pool"
    optional = {"mode": "max", "size": 3, "stride": 2}

    def setup(self):
        c, h, w = self._image_input()
        if self.opts["mode"] not in ("max", "avg"):
            raise self.error(f"mode must be 'max' or 'avg', got {self.opts['mode']!r}")
        self.mode = self.opts["mode"]
        self.size = self._int_opt("size", 1)
        self.stride = self._int_opt("stride", 1)
        if self.size > h or self.size > w:
            raise self.error(f"pooling window {self.size}x{self.size} is larger than the input {h}x{w}")
        self.x = self.y = self.arg = None
        return (c, reference.pool_output_size(h, self.size, self.stride),
                reference.pool_output_size(w, self.size, self.stride))

    def describe(self):
        return f"{self.mode} {self.size}x{self.size} s{self.stride}"

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        x = inputs[0]
        if self.mode == "max" and train and not self.device.runs_kernels:
            # the host's CPU version records each window's first maximum for the backward
            y, self.arg = ops.maxpool_forward(x, size=self.size, stride=self.stride, argmax=True,
                                              backend=self.device)
        else:
            fwd = ops.maxpool_forward if self.mode == "max" else ops.avgpool_forward
            y, self.arg = fwd(x, size=self.size, stride=self.stride, backend=self.device), None
        self.x, self.y = x, y
        return y

    def backward(self, dy, need=None):
        self._require_forward("x", "y")
        if not self._need(need)[0]:
            return [None]
        if self.mode == "max":
            extra = {} if self.arg is None else {"argmax": self.arg}
            dx = ops.maxpool_backward(dy, self.x, self.y, size=self.size, stride=self.stride,
                                      backend=self.device, **extra)
        else:
            dx = ops.avgpool_backward(dy, tuple(self.x.shape), size=self.size, stride=self.stride,
                                      backend=self.device)
        return [dx]


class Dropout(Layer):
    """Inverted dropout with probability p; the mask comes from `self.seed` (set by the net
    before each training forward) and is regenerated in backward. Identity at test."""
    kind = "dropout"
    optional = {"p": 0.5}
    needs_seed = True

    def setup(self):
        p = self.opts["p"]
        if not _is_number(p) or not 0 <= p < 1:
            raise self.error(f"p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.seed = 0
        self.offset = 0              # mask index of the first element (set by the net: data parallelism)
        self._used_seed = None       # seed of the last forward; None: identity (test or p = 0)
        self._done = False
        return self.in_shapes[0]

    def describe(self):
        return f"p {self.p:g}"

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        self._done = True
        if train and self.p > 0:
            self._used_seed, self._used_offset = int(self.seed), int(self.offset)
            return ops.dropout_forward(inputs[0], self.p, self._used_seed, self._used_offset,
                                       backend=self.device)
        self._used_seed = None
        return inputs[0]

    def backward(self, dy, need=None):
        if not self._done:
            raise RuntimeError(f"layer '{self.name}': backward() before forward()")
        if not self._need(need)[0]:
            return [None]
        if self._used_seed is None:
            return [dy]
        return [ops.dropout_backward(dy, self.p, self._used_seed, self._used_offset, backend=self.device)]


class SoftmaxLoss(Layer):
    """Mean softmax cross-entropy of its input's logits (N, classes); the net's output is its input."""
    kind = "softmax_loss"

    def setup(self):
        if len(self.in_shapes[0]) != 1:
            raise self.error(f"input must be logits (N x classes), got N x {_fmt(self.in_shapes[0])}")
        self.probs = self.labels = None
        return self.in_shapes[0]

    def describe(self):
        return "softmax cross-entropy"

    def loss(self, logits, labels):
        """Mean cross-entropy, as the op returns it (on the device: no host synchronization);
        keeps the probabilities for backward."""
        loss, self.probs = ops.softmax_cross_entropy(logits, labels, backend=self.device)
        self.labels = labels
        return loss

    def forward(self, inputs, train=True):
        return inputs[0]

    def backward(self, dy=None, need=None):
        if self.probs is None:
            raise RuntimeError("backward() needs a loss() first")
        return [ops.softmax_cross_entropy_backward(self.probs, self.labels, backend=self.device)]


# --- fused layers: put in place of a pair by the Net's fusion pass ------------------------

class LRNMaxPool(Layer):
    """An lrn layer and the max pool that is its only consumer, as one kernel pair
    (ops.lrn_maxpool_*): the LRN output is never stored; the backward recomputes it."""
    kind = "lrn+pool"
    optional = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, "groups": 1,
                "pool_size": 3, "pool_stride": 2}

    def setup(self):
        c, h, w = self._image_input()
        self.lrn = {key: self.opts[key] for key in ("size", "alpha", "beta", "k", "groups")}
        self.pool_size, self.pool_stride = self.opts["pool_size"], self.opts["pool_stride"]
        self.x = self.arg = None
        return (c, reference.pool_output_size(h, self.pool_size, self.pool_stride),
                reference.pool_output_size(w, self.pool_size, self.pool_stride))

    def describe(self):
        return f"lrn size {self.lrn['size']} + max {self.pool_size}x{self.pool_size} s{self.pool_stride}"

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        self.x = inputs[0]
        y, self.arg = ops.lrn_maxpool_forward(self.x, **self.lrn, pool_size=self.pool_size,
                                              pool_stride=self.pool_stride, backend=self.device)
        return y

    def backward(self, dy, need=None):
        self._require_forward("x", "arg")
        if not self._need(need)[0]:
            return [None]
        return [ops.lrn_maxpool_backward(dy, self.x, self.arg, **self.lrn, pool_size=self.pool_size,
                                         pool_stride=self.pool_stride, backend=self.device)]


class ReLUDropout(Layer):
    """A ReLU (a relu layer, or an fc layer's ReLU neuron) and the dropout that is its only
    consumer, as one kernel (ops.relu_dropout_*) while training with p > 0; at test time, or
    with p = 0, a plain ReLU. The seed is set by the net, as for a dropout layer."""
    kind = "relu+dropout"
    optional = {"p": 0.5}
    needs_seed = True

    def setup(self):
        self.p = float(self.opts["p"])
        self.seed = 0
        self.offset = 0
        self.y = None
        self._dropped = False
        return self.in_shapes[0]

    def describe(self):
        return f"relu + dropout p {self.p:g}"

    def forward(self, inputs, train=True):
        self._check_inputs(inputs)
        self._dropped = bool(train and self.p > 0)
        if self._dropped:
            self.y = ops.relu_dropout_forward(inputs[0], self.p, int(self.seed), int(self.offset),
                                              backend=self.device)
        else:
            self.y = ops.relu_forward(inputs[0], backend=self.device)
        return self.y

    def backward(self, dy, need=None):
        self._require_forward("y")
        if not self._need(need)[0]:
            return [None]
        if self._dropped:
            return [ops.relu_dropout_backward(dy, self.y, self.p, backend=self.device)]
        return [ops.relu_backward(dy, self.y, backend=self.device)]


LAYER_TYPES = {cls.kind: cls for cls in (Data, Conv, FC, ReLU, Tanh, LRN, Pool, Dropout, SoftmaxLoss)}


FUSED_TYPES = {cls.kind: cls for cls in (LRNMaxPool, ReLUDropout)}


def make_layer(spec, in_shapes, device=None):
    """The layer of a LAYERS dict on a device (default the host), checked against its input
    shapes (clear ValueError if wrong)."""
    name = spec.get("name", "?")
    kind = spec.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"layer '{name}': unknown type {kind!r}: choose one of {', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[kind](spec, in_shapes, device)
