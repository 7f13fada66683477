"""Self-check: every kernel against its NumPy reference on this machine.

    python -m convnet.check            # GPU if present, else the CPU emulation
    python -m convnet.check --backend emu
    python -m convnet.check --shapes small   # only the small odd shapes (e.g. under compute-sanitizer)

Prints one line per kernel: the worst normwise relative error over its cases
and PASS/FAIL; kernels in kernels/*.cu that no case exercises are listed as
FAIL too. Exits non-zero on any failure. Run it after installing on a new
GPU or driver.
"""
import argparse
import sys
import time
from collections import OrderedDict

from convnet import backend as devices
from convnet import checking, kernels


def run(device, scales, out=sys.stdout, only=None):
    cases = []
    for scale in scales:
        cases.extend(checking.all_cases(scale))
    if only:
        cases = [c for c in cases if any(o in c.name or o in " ".join(c.kernels) for o in only)]
    per_kernel = OrderedDict()   # kernel -> [worst error, n cases, failed?, seconds, first failure]
    for case in cases:
        t0 = time.perf_counter()
        try:
            err, _ = checking.run_case(case, device)
            failed = not (err <= case.tol)
            why = f"{case.name}: error {err:.2e} > tolerance {case.tol:.0e}" if failed else ""
        except Exception as e:  # a crash in one kernel must not hide the others
            err, failed, why = float("inf"), True, f"{case.name}: {type(e).__name__}: {e}"
        dt = time.perf_counter() - t0
        for name in (case.kernels or [case.name.split()[0]]):
            entry = per_kernel.setdefault(name, [0.0, 0, False, 0.0, ""])
            entry[0] = max(entry[0], err)
            entry[1] += 1
            entry[3] += dt
            if failed and not entry[2]:
                entry[2], entry[4] = True, why
    shipped = set(kernels.signatures())
    failures = 0
    width = max([len(k) for k in shipped | set(per_kernel)] + [10])
    print(f"convnet.check on {device.name}: {len(cases)} cases, {len(shipped)} kernels", file=out)
    for name in sorted(shipped | set(per_kernel)):
        if name not in per_kernel:
            print(f"{name:<{width}}  {'-':>9}  {'0 cases':>8}  FAIL (no check exercises this kernel)", file=out)
            failures += 1
            continue
        err, n, failed, dt, why = per_kernel[name]
        status = "FAIL" if failed else "PASS"
        failures += failed
        line = f"{name:<{width}}  {err:9.2e}  {n:3d} cases  {status}  ({dt:.2f} s)"
        if failed:
            line += f"  {why}"
        print(line, file=out)
    print(f"{'all passed' if not failures else f'{failures} kernel(s) failed'}", file=out)
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m convnet.check", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["auto", "emu", "cuda"], default="auto")
    p.add_argument("--shapes", choices=["small", "alexnet", "all"], default=None,
                   help="small odd shapes, the real AlexNet shapes, or both "
                        "(default: both on a GPU, small on the emulation, where AlexNet shapes take hours)")
    p.add_argument("--only", nargs="*", help="only cases whose name or kernels contain one of these")
    args = p.parse_args(argv)
    backend = args.backend
    if backend == "auto":
        backend = "cuda" if kernels.gpu_available() else "emu"
    if backend == "cuda" and not kernels.gpu_available():
        print("convnet.check: error: --backend cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    shapes = args.shapes or ("all" if backend == "cuda" else "small")
    scales = ["small", "alexnet"] if shapes == "all" else [shapes]
    try:
        failures = run(devices.parse(backend)[0], scales, only=args.only)
    except RuntimeError as e:
        print(f"convnet.check: error: {e}", file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
