"""What the commands share: one-line errors, argument checks, device choice.

A command's `main(argv)` returns its exit code: 0 done, 1 the run failed
(e.g. the loss became NaN), 2 bad input (unknown config, missing data, bad
arguments, no GPU for --device cuda, an unreadable checkpoint). Bad input is
reported as one line on stderr, `prog: error: reason`, never a traceback.
"""
import argparse
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user; str(e) is the one-line reason."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line) instead of printing usage."""

    def error(self, message):
        raise UsageError(message)


def user_errors():
    """The exception types that mean bad input (exit 2, one line)."""
    from convnet.checkpoint import CheckpointError
    from convnet.data import DataError
    return (UsageError, CheckpointError, DataError)


def report(prog, err, code=EXIT_USAGE):
    """Print `prog: error: first line of err` on stderr; return code."""
    text = str(err).strip().splitlines()
    print(f"{prog}: error: {text[0] if text else type(err).__name__}", file=sys.stderr)
    return code


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def int_list(text):
    """"0,1" -> [0, 1]."""
    try:
        values = [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def gpu_count():
    """CUDA devices CuPy sees (0 without CuPy, driver or device)."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:           # no CuPy, no driver, no device all mean "no GPU"
        return 0


def resolve_device(device, gpus=None):
    """(--device, --gpus) -> (backend, devices) for Net.

    device: "auto" (a GPU when CuPy sees one, else the NumPy CPU path), "cpu"
    (NumPy reference), "emu" (the CUDA kernels on the CPU emulation; slow) or
    "cuda". gpus: list of device ids, only with a GPU.
    """
    if device not in ("auto", "cpu", "emu", "cuda"):
        raise UsageError(f"--device {device!r}: choose auto, cpu, emu or cuda")
    n = gpu_count() if device in ("auto", "cuda") or gpus else 0
    if device == "cuda" and n == 0:
        raise UsageError("--device cuda: no CUDA GPU found (CuPy sees none)")
    backend = {"cpu": "numpy", "emu": "emu", "cuda": "cuda"}.get(device) or ("cuda" if n else "numpy")
    if gpus is not None:
        if backend != "cuda":
            raise UsageError(f"--gpus {','.join(map(str, gpus))}: needs a GPU, but the run is on the "
                             f"{'CPU' if n == 0 else backend + ' backend'} ({n} GPU(s) present)")
        if len(set(gpus)) != len(gpus):
            raise UsageError(f"--gpus {','.join(map(str, gpus))}: a GPU is listed twice")
        if len(gpus) > n or any(g < 0 or g >= n for g in gpus):
            raise UsageError(f"--gpus {','.join(map(str, gpus))}: only {n} GPU(s) present "
                             f"(ids 0..{n - 1})")
        return backend, list(gpus)
    return backend, ([0] if backend == "cuda" else None)
