"""The layer graph: a network built from a config (convnet/configs), placed on devices.

    net = Net(config, devices=None, seed=0, input_shape=None)
    print(net.summary())
    logits = net.forward(x, train=True)    # x float32 (N, C, H, W)
    loss = net.loss(logits, labels)        # mean softmax cross-entropy (float)
    net.backward()                         # gradients of that loss into every Param.grad
    net.params(); net.state_dict(); net.load_state_dict(d); net.set_step(n)

config: a dict from convnet.configs.load_config, or a config name. devices:
a convnet.backend device or a list of them (default the host, where the ops
are the NumPy reference: the CPU training path); column c runs on
devices[c % len(devices)], and activations and gradients crossing columns go
through convnet.devices.Placement (peer-to-peer, staged, same device, an
emulated peer copy or a host copy; net.summary() says which).

Build-time checks (one-line ValueError naming the layer): unknown type or
key, unknown input, a cycle, impossible shapes (kernel larger than the padded
input, channels or filters not divisible by groups, pooling window larger
than the image), layers that do not lead to the output.

Initialisation: weights ~ N(0, init_std^2), biases = bias_init, both from
HYPER with per-layer overrides, drawn in float32 from
numpy.random.default_rng(seed), layer by layer in config order, weight then
bias: the same seed gives the same weights on every device.
materialize=False builds shapes only (no arrays: summary and counts).
dtype=np.float64 (host only) runs the whole net in float64, for gradient
checks; float32 otherwise. precision ("fp32", "tf32", "bf16"; convnet/precision.py)
is the input rounding of the conv and fc products (tf32/bf16 on the tensor-core
kernels); weights, activations, LRN, softmax, loss and update stay float32.

Fusion (fuse=True, the default): a graph rewrite (`fuse_layers`) that puts
one fused layer in place of a pair whose first layer feeds only the second,
on the same column: an lrn and a max pool -> LRNMaxPool (ops.lrn_maxpool_*);
a relu layer, or the ReLU neuron of an fc layer, and a dropout ->
ReLUDropout (ops.relu_dropout_*); a conv and a relu layer -> a conv with the
ReLU neuron, which every conv layer with it runs in the convolution's
epilogue. The fused layer takes the second layer's name, so the rest of the
graph is unchanged; net.fusions lists the pairs and net.summary() names them.
The results equal the unfused layers' up to float32 rounding. fuse=False
runs every layer on its own.

Dropout: the seed of a dropout layer's mask at training step n is derived
from (seed, n, the layer's index in the config); net.step counts training
forwards (each forward(train=True) uses the current step, then adds one), and
set_step(n) restores it, so a resumed run draws the same masks.
Data parallelism (convnet/distributed.py) sets net.row_offset to the row of
the global batch where this process's slice starts: a dropout layer's mask
index of element i is then row_offset * (elements per row) + i, so the
slices' masks are the rows of the one-process mask.
"""
import copy
import fnmatch
import math

import numpy as np

from convnet import backend
from convnet.devices import Placement
from convnet.precision import check_precision
from convnet.layers import LRNMaxPool, ReLUDropout, SoftmaxLoss, make_layer

OVERRIDE_KEYS = ("init_std", "bias_init", "lr_mult", "bias_lr_mult", "weight_decay",
                 "bias_weight_decay", "momentum")
HYPER_DEFAULTS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "init_std": 0.01, "bias_init": 0.0}


MAX_POOL_AREA = 256        # the fused LRN + max pool kernel keeps the argmax in one byte


def _graph_order(specs):
    """Layer names in an order where every layer follows its inputs (Kahn's algorithm,
    ties in config order); a cycle -> ValueError naming a layer on it."""
    names = [s["name"] for s in specs]
    inputs = {s["name"]: s["_inputs"] for s in specs}
    done, order = set(), []
    while len(order) < len(names):
        ready = [n for n in names if n not in done and all(i in done for i in inputs[n])]
        if not ready:
            left = [n for n in names if n not in done]
            # follow inputs among the remaining layers until one repeats: that is a cycle
            path, n = [], left[0]
            while n not in path:
                path.append(n)
                n = next(i for i in inputs[n] if i not in done)
            cycle = path[path.index(n):] + [n]
            raise ValueError(f"layer '{n}': cycle in the layer graph: {' -> '.join(cycle)}")
        for n in ready:
            done.add(n)
            order.append(n)
    return order


class Net:
    def __init__(self, config, devices=None, seed=0, input_shape=None,
                 dtype=np.float32, materialize=True, fuse=True, precision="fp32"):
        if isinstance(config, str):
            from convnet.configs import load_config
            config = load_config(config)
        if not isinstance(config, dict) or "LAYERS" not in config:
            raise TypeError("config must be a dict with LAYERS (and HYPER), or a config name")
        devices = backend.parse(devices) if devices is not None else [backend.cpu()]
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64) or (dtype == np.float64 and devices[0].runs_kernels):
            raise ValueError(f"dtype {dtype} not supported on {devices[0].name} "
                             "(float32 everywhere, float64 on the host)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.name = config.get("name", "net")
        self.dtype = dtype
        self.precision = check_precision(precision)
        self.seed = int(seed)
        self.step = 0
        self.row_offset = 0     # row of the global batch this forward's first row is (data parallelism)
        self.hyper = copy.deepcopy(config.get("HYPER", {}))
        specs = self._check_specs(config["LAYERS"], input_shape)

        self.placement = Placement(devices, [s.get("column", 0) for s in specs])
        self.order = _graph_order(specs)
        by_name = {s["name"]: s for s in specs}
        self.layers = {}
        for name in self.order:
            s = by_name[name]
            clean = {k: v for k, v in s.items() if k != "_inputs"}
            self.layers[name] = make_layer(clean, [self.layers[i].out_shape for i in s["_inputs"]],
                                           self.placement.device(s["column"]))
        self.config_order = [s["name"] for s in specs]
        self._find_output()
        # what forward runs: the layers of run_order, or fused layers in place of pairs
        self.nodes = [self.layers[n] for n in self.run_order]
        self.fusions = []
        if fuse:
            self.nodes, self.fusions = fuse_layers(self.nodes, self.consumers, self.output)
        for layer in list(self.layers.values()) + self.nodes:   # conv and fc products
            layer.precision = self.precision
        self._init_params(materialize)
        self._acts = None
        self._loss_ready = False

    # --- building -------------------------------------------------------
    def _check_specs(self, layers, input_shape):
        if not isinstance(layers, list) or not layers:
            raise ValueError("LAYERS must be a non-empty list of layer dicts")
        specs, seen = [], set()
        for i, s in enumerate(layers):
            if not isinstance(s, dict):
                raise ValueError(f"LAYERS[{i}] must be a dict, got {type(s).__name__}")
            name = s.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"LAYERS[{i}]: every layer needs a 'name' (a non-empty string)")
            if name in seen:
                raise ValueError(f"layer '{name}': duplicate name")
            seen.add(name)
            col = s.get("column", 0)
            if isinstance(col, bool) or not isinstance(col, (int, np.integer)) or col < 0:
                raise ValueError(f"layer '{name}': column must be an int >= 0, got {col!r}")
            ins = s.get("inputs", [])
            ins = [ins] if isinstance(ins, str) else ins
            if not isinstance(ins, (list, tuple)) or not all(isinstance(i, str) for i in ins):
                raise ValueError(f"layer '{name}': inputs must be a layer name or a list of names")
            if len(set(ins)) != len(ins):
                raise ValueError(f"layer '{name}': an input is listed twice")
            specs.append(dict(s, column=int(col), _inputs=list(ins)))
        for s in specs:
            for i in s["_inputs"]:
                if i not in seen:
                    raise ValueError(f"layer '{s['name']}': unknown input '{i}'")
        data = [s for s in specs if s.get("type") == "data"]
        if len(data) != 1:
            raise ValueError(f"a net needs exactly one 'data' layer, got {len(data)}")
        if input_shape is not None:
            data[0]["shape"] = [int(d) for d in input_shape]
        return specs

    def _find_output(self):
        consumers = {n: [] for n in self.order}
        for layer in self.layers.values():
            for i in layer.inputs:
                consumers[i].append(layer.name)
        losses = [n for n in self.order if self.layers[n].kind == "softmax_loss"]
        if len(losses) > 1:
            raise ValueError(f"layer '{losses[1]}': a net has at most one softmax_loss layer")
        for n in losses:
            if consumers[n]:
                raise ValueError(f"layer '{consumers[n][0]}': cannot read the loss layer '{n}'")
        self.loss_layer = self.layers[losses[0]] if losses else None
        if self.loss_layer is not None:
            self.output = self.loss_layer.inputs[0]
        else:
            sinks = [n for n in self.order if not consumers[n]]
            if len(sinks) != 1:
                raise ValueError(f"layer '{sinks[1]}': the net must have one output, found {', '.join(sinks)}")
            self.output = sinks[0]
        # every layer must lead to the output (a dead branch would get no gradient)
        live, stack = set(), [self.output]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(self.layers[n].inputs)
        for n in self.config_order:
            if n not in live and self.layers[n] is not self.loss_layer:
                raise ValueError(f"layer '{n}': does not lead to the output '{self.output}'")
        self.data = next(n for n in self.order if self.layers[n].kind == "data")
        self.run_order = [n for n in self.order
                          if n != self.data and self.layers[n] is not self.loss_layer and n in live]
        self.consumers = consumers

    def _layer_hyper(self, name):
        """HYPER defaults with every matching per-layer override applied in order."""
        h = dict(HYPER_DEFAULTS)
        h.update({k: v for k, v in self.hyper.items() if k in HYPER_DEFAULTS})
        for pattern, over in (self.hyper.get("layers") or {}).items():
            if fnmatch.fnmatchcase(name, pattern):
                h.update(over)
        return h

    def _init_params(self, materialize):
        overrides = self.hyper.get("layers") or {}
        if not isinstance(overrides, dict):
            raise ValueError("HYPER['layers'] must be a dict {layer name or pattern: overrides}")
        for pattern, over in overrides.items():
            if not any(fnmatch.fnmatchcase(n, pattern) for n in self.config_order):
                raise ValueError(f"HYPER['layers']: '{pattern}' matches no layer")
            bad = [k for k in over if k not in OVERRIDE_KEYS]
            if bad:
                raise ValueError(f"HYPER['layers']['{pattern}']: unknown key '{bad[0]}' "
                                 f"(allowed: {', '.join(OVERRIDE_KEYS)})")
        rng = np.random.default_rng(self.seed) if materialize else None
        self._params = []
        for name in self.config_order:
            layer = self.layers[name]
            h = self._layer_hyper(name)
            lr_mult = float(h.get("lr_mult", 1.0))
            for key, p in layer.params.items():
                is_bias = key == "b"
                p.device = layer.device
                p.hyper = {
                    "lr_mult": float(h.get("bias_lr_mult", lr_mult)) if is_bias else lr_mult,
                    "weight_decay": float(h.get("bias_weight_decay", h["weight_decay"]) if is_bias
                                          else h["weight_decay"]),
                    "momentum": float(h["momentum"]),
                }
                if materialize:
                    if is_bias:
                        host = np.full(p.shape, h["bias_init"], dtype=np.float32)
                    else:
                        host = rng.standard_normal(p.shape, dtype=np.float32)
                        host *= np.float32(h["init_std"])
                    p.value = self.placement.to_device(host, layer.column, self.dtype)
                self._params.append(p)

    # --- counts and summary ---------------------------------------------
    def params(self):
        """Every Param, layer by layer in config order (weight, then bias)."""
        return list(self._params)

    @property
    def num_params(self):
        return sum(p.size for p in self._params)

    @property
    def num_neurons(self):
        """Output units of the conv and fc layers (the paper's count)."""
        return sum(math.prod(l.out_shape) for l in self.layers.values() if l.has_neurons)

    def crossings(self):
        """(source, destination layer) pairs whose columns differ, in run order."""
        return [(src, n) for n in self.run_order for src in self.layers[n].inputs
                if self.layers[src].column != self.layers[n].column]

    @property
    def devices(self):
        return self.placement.devices

    def summary(self):
        """One line per layer, the totals, and how activations cross columns."""
        devs = ", ".join(d.name for d in self.placement.devices)
        rows = [("layer", "type", "column", "device", "output", "params", "")]
        for name in self.config_order:
            l = self.layers[name]
            n_params = sum(p.size for p in l.params.values())
            rows.append((name, l.kind, str(l.column), self.placement.device_name(l.column),
                         "x".join(str(d) for d in l.out_shape), f"{n_params:,}", l.describe()))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = [f"{self.name}: {len(self.layers)} layers, devices {devs}"
                 + (f", {self.precision} conv/fc products" if self.precision != "fp32" else "")]
        for r in rows:
            line = "  ".join(c.ljust(w) if i != 5 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            lines.append((line + "  " + r[6]).rstrip())
        lines.append(f"total: {self.num_params:,} parameters, {self.num_neurons:,} neurons")
        if self.fusions:
            lines.append("fused layers: " + ", ".join(f"{a}+{b}" for a, b in self.fusions))
        epilogue = [n.name for n in self.nodes if n.kind == "conv" and n.neuron == "relu"]
        if epilogue:
            lines.append("bias + ReLU in the conv epilogue: " + ", ".join(epilogue))
        cross = self.crossings()
        if not cross:
            lines.append("cross-column copies: none")
        else:
            lines.append(f"cross-column copies ({len(cross)}; gradients return the same way):")
            for src, dst in cross:
                a, b = self.layers[src].column, self.layers[dst].column
                lines.append(f"  {src} (column {a}, {self.placement.device_name(a)}) -> {dst} "
                             f"(column {b}, {self.placement.device_name(b)}): "
                             f"{self.placement.copy_kind(a, b)}")
        return "\n".join(lines)

    # --- training step --------------------------------------------------
    def set_step(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"step must be an int >= 0, got {n!r}")
        self.step = int(n)

    def dropout_seed(self, layer_name, step):
        """The mask seed of a dropout layer at a training step (< 2^63)."""
        index = self.config_order.index(layer_name)
        state = np.random.SeedSequence([self.seed, int(step), index]).generate_state(1, np.uint64)
        return int(state[0]) >> 1

    def forward(self, x, train=True):
        """Logits (N, classes) on column 0's device; keeps what backward needs."""
        if self._params and self._params[0].value is None:
            raise RuntimeError("this net was built with materialize=False: it has no weights")
        data = self.layers[self.data]
        if not hasattr(x, "shape") or tuple(x.shape[1:]) != data.out_shape or len(x.shape) < 2:
            shape = tuple(getattr(x, "shape", ()))
            raise ValueError(f"input must have shape N x {'x'.join(map(str, data.out_shape))}, got {shape}")
        self.placement.begin()                 # GPU: the column streams wait for the caller's stream
        acts = {self.data: self.placement.to_device(x, data.column, self.dtype)}
        copies = {}                            # (source, destination column) -> copied array
        for layer in self.nodes:
            name = layer.name
            ins = []
            for src in layer.inputs:
                a = acts[src]
                src_col = self.layers[src].column
                if src_col != layer.column:
                    key = (src, layer.column)
                    if key not in copies:
                        copies[key] = self.placement.transfer(a, src_col, layer.column)
                    a = copies[key]
                ins.append(a)
            if layer.needs_seed:
                layer.seed = self.dropout_seed(name, self.step)
                layer.offset = self.row_offset * math.prod(layer.in_shapes[0])
            with self.placement.context(layer.column):
                acts[name] = layer.forward(ins, train)
        if train:
            self.step += 1
        self._acts = acts
        self._copies = copies
        self._loss_ready = False
        return acts[self.output]

    def loss(self, logits, labels, sync=True):
        """Mean softmax cross-entropy of logits against int labels (N,); keeps the probabilities.
        A float; with sync=False the value as it lies on the output's device (no host
        synchronization: float() of it waits for the step)."""
        if self.loss_layer is None:
            out = self.layers[self.output]
            self.loss_layer = SoftmaxLoss({"name": "loss", "type": "softmax_loss", "inputs": self.output,
                                           "column": out.column}, [out.out_shape], out.device)
        col = self.layers[self.output].column
        labels = self.placement.to_device(labels, col, np.int32)
        with self.placement.context(col):
            value = self.loss_layer.loss(logits, labels)
        self._loss_ready = True
        return float(value) if sync else value

    def backward(self, on_layer=None):
        """Gradients of the last loss() into every Param.grad (overwritten, not accumulated).
        on_layer(layer): called as each layer's backward finishes, with its device and stream
        current, so its Params' grads can be sent on (data parallelism) while the rest runs."""
        if self._acts is None or not self._loss_ready:
            raise RuntimeError("backward() needs forward() and then loss() first")
        col = self.layers[self.output].column
        with self.placement.context(col):
            grads = {self.output: self.loss_layer.backward()[0]}
        for layer in reversed(self.nodes):
            name = layer.name
            dy = grads.pop(name)
            need = [src != self.data for src in layer.inputs]
            with self.placement.context(layer.column):
                dins = layer.backward(dy, need)
                if on_layer is not None and layer.params:
                    on_layer(layer)
            for src, dx in zip(layer.inputs, dins):
                if dx is None:
                    continue
                src_col = self.layers[src].column
                if src_col != layer.column:
                    dx = self.placement.transfer(dx, layer.column, src_col)
                if src in grads:
                    with self.placement.context(src_col):
                        grads[src] = grads[src] + dx
                else:
                    grads[src] = dx
        self.placement.end_backward()
        self._loss_ready = False
        return None

    # --- state ----------------------------------------------------------
    def state_dict(self):
        """{param name: NumPy array copy}."""
        return {p.name: np.array(backend.to_host(p.value), copy=True) for p in self._params}

    def load_state_dict(self, state):
        """Copies arrays into the parameters; missing, unexpected or mis-shaped entries -> ValueError."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        names = {p.name for p in self._params}
        missing = sorted(names - set(state))
        extra = sorted(set(state) - names)
        if missing or extra:
            raise ValueError("state does not match the network: "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                             f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        for p in self._params:
            a = backend.to_host(state[p.name])
            if a.shape != p.shape:
                raise ValueError(f"state '{p.name}' has shape {a.shape}, the network has {p.shape}")
        for p in self._params:
            host = np.ascontiguousarray(backend.to_host(state[p.name]), dtype=self.dtype)
            col = self.layers[p.layer].column
            if p.value is None:
                p.value = self.placement.to_device(host, col, self.dtype)
            elif backend.is_cupy(p.value):
                with self.placement.context(col):
                    p.value.set(host)
            else:
                np.copyto(p.value.view(np.ndarray), host)


def fuse_layers(nodes, consumers, output):
    """The fusion pass: (nodes with fused layers in place of pairs, [(first, second) names]).

    nodes: the layers in run order; consumers: {name: names of the layers reading it};
    output: the net's output (never fused away). A pair fuses when its first layer is read
    only by the second, both are on one column, and the second has that single input."""
    by_name = {n.name: n for n in nodes}
    out, pairs = [], []
    for layer in nodes:
        src = by_name.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        if (src is None or consumers[src.name] != [layer.name] or src.column != layer.column
                or src.name == output or src not in out):
            out.append(layer)
            continue
        fused = _fused_pair(src, layer)
        if fused is None:
            out.append(layer)
            continue
        first, second = fused
        out.remove(src)
        if first is not None:
            out.append(first)
        out.append(second)
        by_name[second.name] = second
        pairs.append(((src.members or (src.name,))[0], layer.name))
    return out, pairs


def _fused_pair(src, layer):
    """(replacement of src or None, replacement of layer) for a fusable pair, else None."""
    col = {"column": layer.column}
    if src.kind == "lrn" and layer.kind == "pool" and layer.mode == "max" and layer.size ** 2 <= MAX_POOL_AREA:
        spec = {"name": layer.name, "type": LRNMaxPool.kind, "inputs": list(src.inputs), **col,
                "size": src.size, "alpha": src.alpha, "beta": src.beta, "k": src.k, "groups": src.groups,
                "pool_size": layer.size, "pool_stride": layer.stride}
        return None, _member(LRNMaxPool(spec, src.in_shapes, layer.device), src, layer)
    if layer.kind == "dropout" and src.kind == "relu":
        spec = {"name": layer.name, "type": ReLUDropout.kind, "inputs": list(src.inputs), **col, "p": layer.p}
        return None, _member(ReLUDropout(spec, src.in_shapes, layer.device), src, layer)
    if layer.kind == "dropout" and src.kind == "fc" and src.neuron == "relu":
        plain = make_layer(dict(src.spec, neuron=None), src.in_shapes, src.device)
        plain.params = src.params
        spec = {"name": layer.name, "type": ReLUDropout.kind, "inputs": [src.name], **col, "p": layer.p}
        return plain, _member(ReLUDropout(spec, [src.out_shape], layer.device), src, layer)
    if layer.kind == "relu" and src.kind == "conv" and src.neuron is None:
        conv = make_layer(dict(src.spec, name=layer.name, neuron="relu"), src.in_shapes, src.device)
        conv.params = src.params
        return None, _member(conv, src, layer)
    return None


def _member(fused, src, layer):
    fused.members = tuple(src.members or (src.name,)) + (layer.name,)
    return fused


def layer_shapes(config, batch):
    """{layer name: (input shapes, output shape)} of a config, batch first: what each layer
    of it runs on (one column's share for a multi-column net). The checks and benchmarks
    take AlexNet's shapes from here (layer_shapes("alexnet", 128)), not typed by hand."""
    net = Net(config, materialize=False, fuse=False)
    return {name: ([(batch,) + s for s in layer.in_shapes], (batch,) + layer.out_shape)
            for name, layer in net.layers.items()}
