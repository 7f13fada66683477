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


def resolve_device(device, gpus=None):
    """(--device, --gpus) -> the list of convnet.backend devices a Net runs on.

    device: "auto" (GPUs when CuPy sees one, else the host), "cpu" (the NumPy
    reference), "emu" (the CUDA kernels on the CPU emulation; slow) or "cuda".
    gpus: device ids, e.g. [0, 1] (the net's columns go to them in turn): GPUs, or
    emulated devices with --device emu (which needs no GPU).
    """
    from convnet import backend
    if device not in ("auto", "cpu", "emu", "cuda"):
        raise UsageError(f"--device {device!r}: choose auto, cpu, emu or cuda")
    n = backend.gpu_count() if device in ("auto", "cuda") else 0
    if device == "cuda" and n == 0:
        raise UsageError("--device cuda: no CUDA GPU found (CuPy sees none)")
    kind = {"cpu": "cpu", "emu": "emu", "cuda": "cuda"}.get(device) or ("cuda" if n else "cpu")
    listed = ",".join(map(str, gpus)) if gpus is not None else ""
    if gpus is not None:
        if kind == "cpu":
            raise UsageError(f"--gpus {listed}: needs a GPU (or --device emu for emulated ones), but the "
                             f"run is on the CPU ({n} GPU(s) present)")
        if len(set(gpus)) != len(gpus):
            raise UsageError(f"--gpus {listed}: a device is listed twice")
        if any(g < 0 for g in gpus):
            raise UsageError(f"--gpus {listed}: ids must be >= 0")
        if kind == "cuda" and any(g >= n for g in gpus):
            raise UsageError(f"--gpus {listed}: only {n} GPU(s) present (ids 0..{n - 1})")
    try:
        return backend.parse(kind if kind == "cpu" else f"{kind}:{listed or 0}")
    except ValueError as e:
        raise UsageError(f"--device {device}: {e}") from None
