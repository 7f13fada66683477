"""Checkpoints: the whole training state in one file, written atomically.

A checkpoint is a pickled dict (NumPy arrays and plain Python values only;
loading refuses any other class):

    format, version   "convnet-checkpoint", 1
    epoch             epochs completed (an interrupted epoch: see `step_in_epoch`)
    step_in_epoch     batches of epoch `epoch + 1` already trained (0 at an epoch's end)
    global_step       batches trained since the start
    net               net.state_dict()          (arrays moved to the host)
    optimizer         optimizer.state_dict()
    schedule          the lr schedule's state
    rng               generator state (dict) of anything random outside the net
    metrics           the history of per-epoch metrics (list of dicts)
    config            the network config (LAYERS, HYPER) and the run's settings

Writes go to a temporary file in the same folder, are fsynced and then
renamed over the target (os.replace), so a crash or kill -9 at any moment
leaves either the old file or the new one, never half of one. A state with
a NaN or an infinity is never written: the last good file stays.
"""
import io
import os
import pickle
import tempfile

import numpy as np

FORMAT = "convnet-checkpoint"
VERSION = 1
LAST = "last.ckpt"
BEST = "best.ckpt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or not one of ours."""


class NonFiniteStateError(CheckpointError):
    """Refused to save a state holding NaN or infinity."""


def to_host(obj):
    """The same nested structure with every CuPy array copied to a NumPy array."""
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    if type(obj).__module__.split(".")[0] == "cupy" and hasattr(obj, "get"):
        return obj.get()
    return obj


def first_non_finite(obj, path=""):
    """The key path of the first float array or float holding NaN/inf, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad = first_non_finite(v, f"{path}.{k}" if path else str(k))
            if bad:
                return bad
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = first_non_finite(v, f"{path}[{i}]")
            if bad:
                return bad
    elif isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        if not np.all(np.isfinite(obj)):
            return path
    elif isinstance(obj, float) and not np.isfinite(obj):
        return path
    return None


def make_state(net, optimizer, epoch, rng=None, metrics=None, config=None, **extra):
    """The dict a checkpoint holds (see the module docstring)."""
    state = {"format": FORMAT, "version": VERSION, "epoch": int(epoch),
             "net": to_host(net.state_dict()),
             "optimizer": to_host(optimizer.state_dict()) if optimizer is not None else None,
             "rng": rng, "metrics": metrics if metrics is not None else [], "config": config}
    state.update(to_host(extra))
    return state


def _check_finite(state):
    for part in ("net", "optimizer"):
        bad = first_non_finite(state.get(part), part)
        if bad:
            raise NonFiniteStateError(f"refusing to save a checkpoint: {bad} holds NaN or infinity")


def atomic_write(path, data):
    """Write bytes to path: temporary file in the same folder, fsync, os.replace."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:                                    # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_state(path, state):
    """Save a state dict made by make_state (refuses non-finite parameters)."""
    _check_finite(state)
    atomic_write(path, pickle.dumps(state, protocol=4))


def save(path, net, optimizer, epoch, rng=None, metrics=None, config=None, **extra):
    """Save the training state to path atomically; returns the state saved."""
    state = make_state(net, optimizer, epoch, rng, metrics, config, **extra)
    write_state(path, state)
    return state


def save_run(directory, state, best=False):
    """Write `last.ckpt` in directory, and `best.ckpt` too when best. Returns the paths."""
    _check_finite(state)
    data = pickle.dumps(state, protocol=4)
    paths = [os.path.join(directory, LAST)]
    if best:
        paths.append(os.path.join(directory, BEST))
    for p in paths:
        atomic_write(p, data)
    return paths


def remove_stale_temporaries(directory):
    """Delete the temporary files a killed save left in directory (".last.ckpt.*.tmp")."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name.startswith((f".{LAST}.", f".{BEST}.")) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


# Only these classes may be rebuilt from a checkpoint: NumPy arrays, dtypes, scalars.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"class {module}.{name} is not allowed in a checkpoint")


def load(path):
    """Read a checkpoint; CheckpointError (one line) when missing, corrupt or foreign."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, LAST)
        if not os.path.exists(candidate):
            raise CheckpointError(f"no checkpoint in folder {path} (expected {LAST})")
        path = candidate
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    try:
        state = _Unpickler(io.BytesIO(data)).load()
    except Exception as e:                  # truncated, garbage, foreign classes
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable convnet checkpoint ({msg})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convnet checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, "
                              f"this code reads version {VERSION}")
    for key in ("epoch", "net"):
        if key not in state:
            raise CheckpointError(f"{path} is incomplete: no {key!r} entry")
    return state
