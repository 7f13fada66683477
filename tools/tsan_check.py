"""Run the kernel checks (python -m convnet.check on the emulation) under ThreadSanitizer.

    make emu-tsan && python3 tools/tsan_check.py                # every kernel case, small shapes
    python3 tools/tsan_check.py --only conv2d_fwd_v2 lrn        # some of them
    python3 tools/tsan_check.py --module mod --code 'python'    # (tests) any code instead

Loads the ThreadSanitizer build (build/tsan/convnet, `make emu-tsan`) with
libtsan preloaded, one OS thread per launch (CONVNET_EMU_THREADS=1: blocks run
one after another, the threads of a block as fibers: races between blocks are
not looked for; --threads 2 looks for some) and single-threaded BLAS (its
threads are not instrumented). Prints each race TSan reports (the first
lines, with the .cu file and line) and a summary; exits 1 on any report or a
failed check, 0 when clean.
"""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TSAN_DIR = ROOT / "build" / "tsan" / "convnet"


def libtsan():
    r = subprocess.run(["gcc", "-print-file-name=libtsan.so"], capture_output=True, text=True)
    path = r.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def tsan_env(threads=1):
    lib = libtsan()
    if lib is None:
        raise RuntimeError("gcc has no libtsan.so (apt-get install libgcc-12-dev)")
    env = dict(os.environ, LD_PRELOAD=lib, CONVNET_EMU_DIR=str(TSAN_DIR), CONVNET_EMU_THREADS=str(threads),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TSAN_OPTIONS="exitcode=66 history_size=4 " + os.environ.get("TSAN_OPTIONS", ""),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


_REPORT = re.compile(r"^WARNING: ThreadSanitizer: (.*)$", re.M)
_SUMMARY = re.compile(r"^SUMMARY: ThreadSanitizer: (.*)$", re.M)


def races(stderr):
    """[(kind, summary, report text)] of the TSan reports in a process's stderr."""
    out = []
    for block in stderr.split("==================\n"):
        m = _REPORT.search(block)
        if m:
            s = _SUMMARY.search(block)
            out.append((m.group(1).split(" (pid")[0], s.group(1) if s else "", block))
    return out


def failed_checks(stdout):
    """convnet.check's FAIL lines, without the kernels --only left unexercised."""
    return [l for l in stdout.splitlines() if " FAIL" in l and "no check exercises" not in l]


def run(args, timeout=1800, threads=1):
    """Run `python3 args...` (python's own binary: a shell wrapper would run under TSan
    too) with the TSan build; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=tsan_env(threads), capture_output=True,
                          text=True, timeout=timeout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="only cases whose name or kernels contain one of these")
    p.add_argument("--shapes", default="small", choices=["small", "alexnet", "all"])
    p.add_argument("--threads", type=int, default=1,
                   help="OS threads per launch (default 1; with more, blocks that run at once on two of "
                        "them are checked against each other too, but which ones do varies run to run)")
    args = p.parse_args(argv)
    if not any(TSAN_DIR.glob("_emu*.so")):
        print(f"no ThreadSanitizer build in {TSAN_DIR.relative_to(ROOT)}: run `make emu-tsan` first")
        return 1
    cmd = ["-m", "convnet.check", "--backend", "emu", "--shapes", args.shapes]
    if args.only:
        cmd += ["--only", *args.only]
    r = run(cmd, threads=args.threads)
    found = races(r.stderr)
    passed = [l.split()[0] for l in r.stdout.splitlines() if " PASS" in l]
    print(f"convnet.check under ThreadSanitizer: {len(passed)} kernel(s) passed")
    for kind, summary, text in found:
        print(f"TSan: {kind}: {summary}")
        for line in text.splitlines():
            if re.match(r"\s+#0 ", line) or "Previous" in line or line.lstrip().startswith(("Read", "Write")):
                print("   " + line.strip())
    failed = failed_checks(r.stdout)
    check_failed = bool(failed) or "Traceback" in r.stderr
    for line in failed:
        print("check " + line.strip())
    if "Traceback" in r.stderr:
        print("convnet.check raised: " + r.stderr.strip().splitlines()[-1])
    print(f"ThreadSanitizer: {len(found)} report(s)" + ("" if found else ": every case clean"))
    return 1 if found or check_failed else 0


if __name__ == "__main__":
    sys.exit(main())
