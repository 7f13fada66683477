"""Checkpoints: the whole training state in one safetensors file, checked on load.

A checkpoint (format version 2) is a safetensors file: every array of the
state (the net's parameters, the optimizer's velocities) is a tensor with
its dtype and shape in the file's header, and everything else (epoch,
steps, metrics, config, run settings, schedule, generator state) is JSON in
the header's metadata. Nothing in it is ever executed: safetensors reads
bytes into arrays, json reads plain values.

    metadata "format"          "convnet-checkpoint"
    metadata "version"         "2"
    metadata "state"           JSON of the state, each array replaced by {"__tensor__": NAME}
    metadata "convnet_sha256"  SHA-256 of the whole file with this value written as 64 zeros
    tensors                    NAME -> array; NAME is the array's key path ("net/conv1.w",
                               "optimizer/velocity/conv1.w")

The state (a dict):
    epoch             epochs completed (an interrupted epoch: see `step_in_epoch`)
    step_in_epoch     batches of epoch `epoch + 1` already trained (0 at an epoch's end)
    global_step       batches trained since the start
    best_epoch        the epoch with the lowest validation error so far (best.ckpt's)
    net               net.state_dict()          (arrays moved to the host)
    optimizer         optimizer.state_dict()
    schedule          the lr schedule's state
    rng               generator state (dict) of anything random outside the net
    metrics           the history of per-epoch metrics (list of dicts)
    config            the network config (LAYERS, HYPER) and the run's settings
Tuples come back as lists (JSON has no tuples).

load() verifies the checksum, the header and the types of the fields before
anything is built from them: a corrupt, truncated or foreign file is one
CheckpointError line. Version-1 checkpoints (pickled dicts) are not read;
`python -m convnet.checkpoint convert PATH` converts one, or a run folder's
last.ckpt and best.ckpt, once, in place (docs: README, Training);
`python -m convnet.checkpoint verify PATH` loads and checks files.

Writes go through convnet.fsio.write_atomic (beside, fsync, os.replace): a
crash or kill -9 at any moment leaves the old file or the new one. A state
with a NaN or an infinity is never written: the last good file stays.

A run folder (--checkpoint-dir) holds last.ckpt, best.ckpt, log.jsonl and
run.lock. save_run writes last.ckpt before best.ckpt, and last.ckpt records
best_epoch: after a kill between the two, repair_best() (called when a run
resumes) copies last.ckpt over best.ckpt. RunLock gives the folder to one run
at a time.
"""
import sys

if __name__ == "__main__":          # before the slow imports: Ctrl-C now is one line, exit 130
    from convnet import startup
    startup.guard("convnet.checkpoint")

import hashlib
import json
import os
import re
import socket

import numpy as np

from convnet import fsio

FORMAT = "convnet-checkpoint"
VERSION = 2
LAST = "last.ckpt"
BEST = "best.ckpt"
LOCK = "run.lock"
CHECKSUM_KEY = "convnet_sha256"
TENSOR = "__tensor__"
MAX_HEADER = 100 << 20                  # bytes of JSON header we are willing to parse


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, corrupt, or not one of ours."""


class NonFiniteStateError(CheckpointError):
    """Refused to save a state holding NaN or infinity."""


class RunFolderBusy(CheckpointError):
    """Another live run holds the run folder's lock."""


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


# --------------------------------------------------------------------------
# Encoding: arrays -> safetensors tensors, the rest -> JSON

def _split(obj, path, tensors):
    """obj with every array replaced by {"__tensor__": name}; the arrays go into tensors."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint state: key {k!r} at {path or 'top'} is not a string")
            out[k] = _split(v, f"{path}/{k}" if path else k, tensors)
        return out
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"checkpoint state: {path} has dtype {obj.dtype}; only numbers and booleans")
        if path in tensors:
            raise ValueError(f"checkpoint state: two arrays named {path}")
        tensors[path] = np.ascontiguousarray(obj)
        return {TENSOR: path}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state: {path} is a {type(obj).__name__}; only arrays and plain values")


def _join(obj, tensors, path):
    if isinstance(obj, dict):
        if set(obj) == {TENSOR}:
            name = obj[TENSOR]
            if not isinstance(name, str) or name not in tensors:
                raise CheckpointError(f"{path}: the state names a tensor {name!r} the file does not hold")
            return tensors[name]
        return {k: _join(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors, path) for v in obj]
    return obj


def encode(state):
    """The bytes of a checkpoint file holding state."""
    from safetensors.numpy import save as st_save
    tensors = {}
    skeleton = _split(state, "", tensors)
    meta = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(skeleton),
            CHECKSUM_KEY: "0" * 64}
    data = bytearray(st_save(tensors, metadata=meta))
    start, end = _checksum_span(data)
    data[start:end] = hashlib.sha256(data).hexdigest().encode()
    return data


def _header(data, path):
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a readable convnet checkpoint (only {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, MAX_HEADER):
        raise CheckpointError(f"{path}: not a readable convnet checkpoint (corrupt or truncated header)")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a readable convnet checkpoint (its header is not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a convnet checkpoint (a safetensors file without our header)")
    return n, meta


_CHECKSUM_RE = re.compile(rb'"' + CHECKSUM_KEY.encode() + rb'"\s*:\s*"([0-9a-f]{64})"')


def _checksum_span(data, n=None):
    """(start, end) of the checksum's 64 hex digits in the header."""
    if n is None:
        n = int.from_bytes(data[:8], "little")
    found = list(_CHECKSUM_RE.finditer(data, 8, 8 + n))
    if len(found) != 1:
        return None
    return found[0].start(1), found[0].end(1)


def _pickled(data):
    """True for a version-1 file: a pickle (protocol 2 or later: byte 0x80, then the protocol).
    A safetensors file starts with its header's length (8 bytes, little-endian) and then the
    header's "{"; that length's low byte may be 0x80 too (a header of 0x2180 bytes was)."""
    return data[:1] == b"\x80" and data[8:9] != b"{"


def decode(data, path="checkpoint"):
    """A checkpoint's bytes -> state; CheckpointError (one line) when corrupt or foreign."""
    if _pickled(data):
        raise CheckpointError(f"{path}: an old (version 1, pickled) checkpoint; convert it once with "
                              f"python -m convnet.checkpoint convert {path}")
    n, meta = _header(data, path)
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')}, this code reads version {VERSION}")
    span = _checksum_span(data, n)
    if span is None:
        raise CheckpointError(f"{path}: corrupt checkpoint (no checksum in its header)")
    start, end = span
    want = bytes(data[start:end]).decode()
    view = memoryview(data)
    h = hashlib.sha256(view[:start])
    h.update(b"0" * 64)
    h.update(view[end:])
    got = h.hexdigest()
    if got != want:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch: the file changed after it "
                              "was written)")
    from safetensors.numpy import load as st_load
    try:
        tensors = st_load(bytes(data))
        skeleton = json.loads(meta["state"])
    except Exception as e:          # safetensors' own error type, json's ValueError, KeyError
        raise CheckpointError(f"{path}: corrupt checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    state = _join(skeleton, tensors, path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (the state is not a dict)")
    state["format"], state["version"] = FORMAT, VERSION
    check_state(state, path)
    return state


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_state(state, path):
    """The fields' types, before anything is built from them; CheckpointError naming the field."""
    def bad(field, what):
        raise CheckpointError(f"{path}: field {field!r} {what}")
    for key in ("epoch", "net"):
        if key not in state:
            raise CheckpointError(f"{path} is incomplete: no {key!r} entry")
    for key in ("epoch", "step_in_epoch", "global_step"):
        if key in state and not (_is_int(state[key]) and state[key] >= 0):
            bad(key, f"must be an integer >= 0, got {state[key]!r}")
    if state.get("best_epoch") is not None and not (_is_int(state["best_epoch"]) and state["best_epoch"] >= 1):
        bad("best_epoch", f"must be an integer >= 1, got {state['best_epoch']!r}")
    net = state["net"]
    if not isinstance(net, dict) or not all(isinstance(v, np.ndarray) and v.dtype.kind == "f"
                                            for v in net.values()):
        bad("net", "must map parameter names to float arrays")
    opt = state.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or not isinstance(opt.get("velocity", {}), dict):
            bad("optimizer", "must be a dict with a 'velocity' dict")
        for k in ("lr", "momentum", "weight_decay"):
            if k in opt and not (isinstance(opt[k], (int, float)) and not isinstance(opt[k], bool)):
                bad(f"optimizer.{k}", f"must be a number, got {opt[k]!r}")
    for key, kind in (("metrics", list), ("config", dict), ("run", dict), ("schedule", dict),
                      ("partial", dict)):
        if state.get(key) is not None and not isinstance(state[key], kind):
            bad(key, f"must be a {kind.__name__}, got {type(state[key]).__name__}")
    if any(not isinstance(m, dict) for m in state.get("metrics") or []):
        bad("metrics", "must be a list of dicts")
    for m in state.get("metrics") or []:
        if not isinstance(m.get("val_top1", 0.0), (int, float)) or isinstance(m.get("val_top1"), bool):
            bad("metrics", f"val_top1 must be a number, got {m.get('val_top1')!r}")
    cfg = state.get("config")
    if cfg is not None and (not isinstance(cfg.get("LAYERS"), list) or not isinstance(cfg.get("HYPER", {}), dict)):
        bad("config", "must hold LAYERS (a list) and HYPER (a dict)")


# --------------------------------------------------------------------------
# Files

def write_state(path, state):
    """Save a state dict made by make_state (refuses non-finite parameters)."""
    _check_finite(state)
    fsio.write_atomic(path, encode(state), make_parent=True)


def save(path, net, optimizer, epoch, rng=None, metrics=None, config=None, **extra):
    """Save the training state to path atomically; returns the state saved."""
    state = make_state(net, optimizer, epoch, rng, metrics, config, **extra)
    write_state(path, state)
    return state


def save_run(directory, state, best=False):
    """Write `last.ckpt` in directory, then `best.ckpt` too when best. Returns the paths.

    last.ckpt first: a kill between the two leaves a last.ckpt whose best_epoch is its
    own epoch, from which repair_best() restores best.ckpt."""
    _check_finite(state)
    data = encode(state)
    paths = [os.path.join(directory, LAST)]
    if best:
        paths.append(os.path.join(directory, BEST))
    for p in paths:
        fsio.write_atomic(p, data)
    return paths


def remove_stale_temporaries(directory):
    """Delete the temporary files a killed save left in directory (".last.ckpt.*.tmp")."""
    return fsio.remove_temporaries(directory, [LAST, BEST, "log.jsonl"])


def _resolve(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, LAST)
        if not os.path.lexists(candidate):
            raise CheckpointError(f"{path}: no checkpoint in folder (expected {LAST})")
        path = candidate
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def read_bytes(path):
    try:
        return fsio.read_regular(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None


def load(path):
    """Read and verify a checkpoint (a file, or a folder holding last.ckpt) -> state dict."""
    path = _resolve(path)
    return decode(read_bytes(path), path)


def peek(path):
    """The state JSON of a checkpoint without its tensors and without verifying it (or None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= MAX_HEADER:
            return None
        data = head + os.read(fd, n)
        _, meta = _header(data, path)
        return json.loads(meta["state"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        os.close(fd)


def repair_best(directory):
    """After a kill between save_run's two writes: copy last.ckpt over best.ckpt when last.ckpt
    is the best epoch's end and best.ckpt is missing or older. Returns a note, or None."""
    last, best = os.path.join(directory, LAST), os.path.join(directory, BEST)
    state = peek(last)
    if not state or state.get("best_epoch") is None or state.get("step_in_epoch", 0) != 0:
        return None
    if state.get("best_epoch") != state.get("epoch"):
        return None
    other = peek(best)
    if other is not None and other.get("epoch") == state["epoch"]:
        return None
    data = read_bytes(last)
    decode(data, last)                  # only a verified file becomes best.ckpt
    fsio.write_atomic(best, data)
    return (f"{best}: restored from {LAST} (epoch {state['epoch']} was the best; the previous run stopped "
            "before writing it)")


# --------------------------------------------------------------------------
# One run per folder

class RunLock:
    """An advisory lock on DIR/run.lock (fcntl.flock) holding the owner's pid and host.

    (flock, not the pid: a lock is held exactly while its process lives, whatever
    happened to the pid since, and works across hosts on file systems that pass
    flock through.)

    The kernel drops the lock when its process dies, so a lock file whose lock is free
    is stale: it is taken over, and `note` says whose it was. A live owner ->
    RunFolderBusy naming its pid and host. release() empties the file and unlocks."""

    def __init__(self, directory):
        import fcntl
        self.path = os.path.join(directory, LOCK)
        self.note = None
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(self.path, flags, 0o666)
        except OSError:
            if os.path.islink(self.path):
                raise CheckpointError(f"{self.path}: is a symbolic link; refusing to use it as the run's "
                                      "lock") from None
            raise
        try:
            import stat
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                raise CheckpointError(f"{self.path}: not a regular file")
            owner = self._read()
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
                raise RunFolderBusy(f"{directory}: in use by another run ({who}, {LOCK}); wait for it to end "
                                    "or use another --checkpoint-dir") from None
            owner = self._read()                # what the last holder wrote, now that we hold it
            if owner:
                self.note = (f"{self.path}: took over a stale lock of pid {owner.get('pid')} on "
                             f"{owner.get('host')} (that run ended without releasing it)")
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(sys.argv)}) + "\n"
            try:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, record.encode(), 0)
            except OSError as e:
                raise OSError(e.errno, e.strerror, self.path) from None
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise

    def _read(self):
        try:
            text = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").strip()
            owner = json.loads(text) if text else None
            return owner if isinstance(owner, dict) else ({"pid": "?", "host": "?"} if text else None)
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}

    def release(self):
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)        # an empty lock file is a free folder, no note next time
        except OSError:
            pass
        os.close(self.fd)                   # closing drops the flock
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------
# Converting version-1 (pickled) checkpoints, once

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


def read_version1(path):
    """A version-1 checkpoint (a pickle of arrays and plain values; other classes refused) -> state."""
    import io
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"class {module}.{name} is not allowed in a checkpoint")

    data = read_bytes(path)
    try:
        state = Unpickler(io.BytesIO(data)).load()
    except Exception as e:                  # truncated, garbage, foreign classes
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable version-1 checkpoint ({msg})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != 1:
        raise CheckpointError(f"{path}: not a version-1 convnet checkpoint")
    state["version"] = VERSION
    check_state(state, path)
    return state


def convert(path):
    """Convert a version-1 checkpoint file in place (atomically). Returns a line saying what it did."""
    data = read_bytes(path)
    if not _pickled(data):
        decode(data, path)
        return f"{path}: already version {VERSION}"
    state = read_version1(path)
    write_state(path, state)
    decode(fsio.read_regular(path), path)
    return f"{path}: converted to version {VERSION} (epoch {state['epoch']})"


def main(argv=None):
    """python -m convnet.checkpoint convert PATH... | verify PATH..."""
    from convnet import cli

    def body():
        p = cli.ArgumentParser(prog="python -m convnet.checkpoint",
                               description="Convert version-1 checkpoints in place, or verify checkpoints.")
        p.add_argument("action", choices=["convert", "verify"])
        p.add_argument("paths", nargs="+", help="checkpoint files, or run folders (their last.ckpt and best.ckpt)")
        args = p.parse_args(argv)
        files = []
        for path in args.paths:
            if os.path.isdir(path):
                found = [os.path.join(path, n) for n in (LAST, BEST) if os.path.exists(os.path.join(path, n))]
                if not found:
                    raise CheckpointError(f"{path}: no {LAST} or {BEST} in this folder")
                files += found
            else:
                files.append(_resolve(path))
        for f in files:
            if args.action == "convert":
                print(convert(f))
            else:
                s = load(f)
                print(f"{f}: ok (version {VERSION}, epoch {s['epoch']}, checksum verified)")
        return cli.EXIT_OK

    return cli.run("convnet.checkpoint", body)


if __name__ == "__main__":
    from convnet import startup
    startup.finish(main())
