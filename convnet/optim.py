"""Stochastic gradient descent with the paper's rule, and learning-rate schedules.

    v <- momentum * v - weight_decay * lr * w - lr * dw ;  w <- w + v

applied to every parameter through `ops.sgd_update` on the device that holds
it (convnet.backend: the NumPy reference on the host, the CUDA kernel on an
emulated device or a GPU), with that device current; the velocity lives
beside the parameter on the same device. Each parameter may override the global settings in
`Param.hyper`:

    lr_mult       multiplies the global learning rate (default 1)
    weight_decay  replaces the global weight decay (e.g. 0 for biases)
    momentum      replaces the global momentum

Schedules (`make_schedule`):

    "plateau"  the paper's rule: divide the learning rate by `factor` (10) when
               the validation error has not improved for `patience` epochs,
               at most `max_drops` times (the paper: three times in ~90 epochs)
    "step"     divide by `factor` at the start of each epoch listed in `epochs`
    "constant" never change it
"""
import numpy as np

from convnet import backend, ops


def _copy_into(dst, src, device):
    """dst[...] = src for a destination on `device` and a host source."""
    src = np.asarray(src)
    if src.shape != tuple(dst.shape):
        raise ValueError(f"optimizer state has shape {src.shape}, parameter has {tuple(dst.shape)}")
    if backend.is_cupy(dst):
        with device.context():
            dst.set(np.ascontiguousarray(src, dtype=dst.dtype))
    else:
        np.copyto(dst.view(np.ndarray), src)


class SGD:
    """Momentum SGD with weight decay over a list of Params (.name, .value, .grad, .hyper).

    Each parameter is updated on the device its value lives on (backend.of(p.value)).
    """

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0005):
        params = list(params)
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError("SGD: parameter names must be unique")
        if not lr > 0:
            raise ValueError(f"SGD: learning rate must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight decay must be >= 0, got {weight_decay}")
        self.params = params
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        # velocity per parameter: zeros of the value's shape and dtype, on its device
        self.devices = {p.name: backend.of(p.value) for p in params}
        self.velocity = {}
        for p in params:
            device = self.devices[p.name]
            with device.context():
                self.velocity[p.name] = device.xp.zeros(p.value.shape, dtype=p.value.dtype)

    def settings(self, p):
        """(lr, momentum, weight_decay) for one parameter."""
        h = getattr(p, "hyper", None) or {}
        lr = self.lr * float(h.get("lr_mult", 1.0))
        momentum = float(h.get("momentum", self.momentum))
        weight_decay = float(h.get("weight_decay", self.weight_decay))
        return lr, momentum, weight_decay

    def step(self):
        """One update of every parameter from its .grad (in place)."""
        for p in self.params:
            if p.grad is None:
                raise ValueError(f"SGD: parameter {p.name} has no gradient; call backward() first")
            lr, momentum, weight_decay = self.settings(p)
            device = self.devices[p.name]
            with device.context():
                ops.sgd_update(p.value, p.grad, self.velocity[p.name], lr, momentum, weight_decay,
                               backend=device)

    def state_dict(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": {name: np.array(backend.to_host(v), copy=True) for name, v in self.velocity.items()}}

    def load_state_dict(self, state):
        missing = set(self.velocity) - set(state["velocity"])
        extra = set(state["velocity"]) - set(self.velocity)
        if missing or extra:
            raise ValueError("optimizer state does not match the network: "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        for name, v in self.velocity.items():
            _copy_into(v, state["velocity"][name], self.devices[name])


class Schedule:
    """Base: holds the current learning rate; `end_epoch(val_error)` returns the next one."""

    kind = "constant"

    def __init__(self, lr):
        self.lr = float(lr)
        self.epochs_done = 0

    def end_epoch(self, val_error):
        self.epochs_done += 1
        return self.lr

    def state_dict(self):
        return dict(vars(self), kind=self.kind)

    def load_state_dict(self, state):
        if state.get("kind") != self.kind:
            raise ValueError(f"lr schedule in the checkpoint is {state.get('kind')!r}, not {self.kind!r}")
        for k, v in state.items():
            if k != "kind":
                setattr(self, k, v)


class PlateauSchedule(Schedule):
    """Divide lr by `factor` when the validation error has not improved
    (by more than `threshold`) for `patience` epochs; at most `max_drops` times."""

    kind = "plateau"

    def __init__(self, lr, patience=1, factor=10.0, max_drops=3, threshold=0.0):
        super().__init__(lr)
        if patience < 1:
            raise ValueError(f"plateau schedule: patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.factor = float(factor)
        self.max_drops = int(max_drops)
        self.threshold = float(threshold)
        self.best = float("inf")
        self.bad_epochs = 0
        self.drops = 0

    def end_epoch(self, val_error):
        self.epochs_done += 1
        if val_error < self.best - self.threshold:
            self.best = float(val_error)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and self.drops < self.max_drops:
                self.lr /= self.factor
                self.drops += 1
                self.bad_epochs = 0
        return self.lr


class StepSchedule(Schedule):
    """Divide lr by `factor` after each epoch number in `epochs` (1-based: [3] means
    epochs 1-3 run at lr and epoch 4 onwards at lr / factor)."""

    kind = "step"

    def __init__(self, lr, epochs=(), factor=10.0):
        super().__init__(lr)
        epochs = sorted(int(e) for e in epochs)
        if any(e < 1 for e in epochs):
            raise ValueError(f"step schedule: epochs must be >= 1, got {epochs}")
        self.epochs = epochs
        self.factor = float(factor)

    def end_epoch(self, val_error):
        self.epochs_done += 1
        if self.epochs_done in self.epochs:
            self.lr /= self.factor
        return self.lr


SCHEDULES = {"plateau": PlateauSchedule, "step": StepSchedule, "constant": Schedule}


def make_schedule(kind, lr, **options):
    """A schedule by name ("plateau", "step", "constant") with its options."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](lr, **options)
