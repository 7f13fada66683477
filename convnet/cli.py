"""What the commands share: the one error path, argument checks, device choice.

A command's `main(argv)` returns its exit code through `run(prog, body)`:

    0    done
    1    the run failed (the loss became NaN), or the environment did (disk
         full, read-only file system, permission denied, out of memory)
    2    bad input: unknown config, missing or malformed data, bad arguments,
         a path that is a file where a folder is needed (or the reverse), no
         GPU for --device cuda, a corrupt or foreign checkpoint
    130  Ctrl-C, at any moment: while starting, while running, and a second
         Ctrl-C during the first one's clean-up

Every error is one line on stderr, `prog: error: PATH: problem`, never a
traceback. convnet/startup.py (imported first by a command run as
`python -m`) makes a Ctrl-C during the imports exit 130 with a line, too.
"""
import argparse
import errno
import os
import signal
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# OSError numbers that mean the environment failed (exit 1); any other is bad input (exit 2)
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.ENOMEM,
                      errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ETXTBSY}


class UsageError(Exception):
    """Bad input from the user; str(e) is the one-line reason (exit 2)."""


class EnvironmentFailure(Exception):
    """The machine refused (disk full, read-only, permission); str(e) is the line (exit 1)."""


def describe_os_error(e):
    """"PATH: problem" for an OSError."""
    what = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.EFBIG:
        what = "file too large (size limit or disk full)"
    name = getattr(e, "filename", None)
    return f"{os.fsdecode(name)}: {what}" if name else what


def os_error_code(e):
    return EXIT_FAILED if e.errno in ENVIRONMENT_ERRNOS else EXIT_USAGE


def run(prog, body):
    """Call body() -> exit code; every error becomes one line and its exit code."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        pass
    try:
        try:
            return body()
        except KeyboardInterrupt as e:
            _ignore_sigint()
            return report(prog, f"interrupted; {e or 'nothing more done'}", EXIT_INTERRUPTED, prefix="")
        except EnvironmentFailure as e:
            return report(prog, e, EXIT_FAILED)
        except user_errors() as e:
            return report(prog, e, EXIT_USAGE)
        except OSError as e:
            return report(prog, describe_os_error(e), os_error_code(e))
        except MemoryError:
            return report(prog, "out of memory", EXIT_FAILED)
    except KeyboardInterrupt:            # a Ctrl-C while reporting
        _ignore_sigint()
        return report(prog, "interrupted", EXIT_INTERRUPTED, prefix="")


def _ignore_sigint():
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pass


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line) instead of printing usage."""

    def error(self, message):
        raise UsageError(message)


def user_errors():
    """The exception types that mean bad input (exit 2, one line)."""
    from convnet.checkpoint import CheckpointError
    from convnet.configs import ConfigError
    from convnet.data.errors import DataError
    return (UsageError, CheckpointError, ConfigError, DataError)


def report(prog, err, code=EXIT_USAGE, prefix="error: "):
    """Print `prog: error: first line of err` on stderr; return code."""
    text = str(err).strip().splitlines()
    print(f"{prog}: {prefix}{text[0] if text else type(err).__name__}", file=sys.stderr, flush=True)
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
