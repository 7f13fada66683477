"""Static figures of the convolution kernels' sm_90 machine code (no GPU needed).

    python benchmarks/conv_sass.py [--fatbin build/kernels/conv.fatbin] [--kernels v4] [--listing NAME]

Reads the sm_90 SASS of build/kernels/conv.fatbin (the Makefile's nvcc build;
`make kernels` first) with cuobjdump (the CUDA toolkit's, or PyPI's
nvidia-cuda-cuobjdump), finds each kernel's main loop (the backward branch
whose body holds the most FFMA) and counts its instructions by opcode. One
line per kernel:

    conv2d_fwd_v4 | loop 1135 instr | FFMA 1024 (90.2%) | LDS 68 | LDGSTS 10 | other 33

The FFMA fraction of the loop body is the static bound on the FP32 pipe's
share of the issue slots in the K loop: one warp scheduler issues one
instruction per cycle and an SM's four schedulers reach the FFMA peak only
when every slot is an FFMA. `@!PT` instructions (never-executed padding that
ptxas places around LDGSTS) are counted, since they take an issue slot.
`main_loops()` returns the same figures for the model (benchmarks/conv_model.py,
convnet.tune.FFMA_SHARE).
"""
import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FATBIN = os.path.join(ROOT, "build", "kernels", "conv.fatbin")
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNC = re.compile(r"^\s*Function : (\S+)")
_BRA = re.compile(r"\bBRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))")


def cuobjdump():
    """The cuobjdump binary: on PATH, next to nvcc, or from the nvidia-cuda-cuobjdump wheel."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for base in sys.path:
        hits = sorted(glob.glob(os.path.join(base, "nvidia", "*", "bin", "cuobjdump")))
        if hits:
            return hits[-1]
    raise SystemExit("cuobjdump not found: install the CUDA toolkit or `pip install nvidia-cuda-cuobjdump`")


def sass(fatbin=FATBIN, arch="sm_90", names=None):
    """{kernel name: [(address, instruction text)]} of one architecture's code in the fatbin
    (only the kernels in names, when given)."""
    if not os.path.exists(fatbin):
        raise SystemExit(f"{fatbin} is missing: run `make kernels` (needs nvcc)")
    only = ["-fun", ",".join(names)] if names else []
    out = subprocess.run([cuobjdump(), "-sass", "-arch", arch, *only, fatbin], check=True,
                         capture_output=True, text=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    return funcs


def opcode(text):
    """'FFMA' for '@P0 FFMA.FTZ R1, ...'; '@!PT' padding keeps its own name."""
    if text.startswith("@!PT "):
        return "@!PT " + text.split()[1].split(".")[0]
    text = re.sub(r"^@!?U?P[T\d]+\s+", "", text)
    return text.split()[0].split(".")[0]


def main_loop(instrs):
    """(start, end, Counter of opcodes) of the loop whose body has the most FFMA."""
    best = None
    for addr, text in instrs:
        m = _BRA.search(text)
        if not m or m.group(1) is None:
            continue
        target = int(m.group(1), 16)
        if target > addr:
            continue
        body = collections.Counter(opcode(t) for a, t in instrs if target <= a <= addr)
        if best is None or body["FFMA"] > best[2]["FFMA"]:
            best = (target, addr, body)
    return best


def main_loops(fatbin=FATBIN, pattern="", names=None):
    """{kernel: Counter of its main loop's opcodes} for kernels whose name contains pattern
    (and is in names, when given)."""
    out = {}
    for name, instrs in sorted(sass(fatbin, names=names).items()):
        if pattern in name:
            loop = main_loop(instrs)
            if loop is not None and loop[2]["FFMA"]:
                out[name] = loop[2]
    return out


def ffma_fraction(body):
    return body["FFMA"] / sum(body.values())


def line(name, body):
    total = sum(body.values())
    lds = body["LDS"]
    ldgsts = body["LDGSTS"]
    pad = sum(v for k, v in body.items() if k.startswith("@!PT"))
    other = total - body["FFMA"] - lds - ldgsts - pad
    return (f"{name} | loop {total} instr | FFMA {body['FFMA']} ({100 * ffma_fraction(body):.1f}%) | "
            f"LDS {lds} | LDGSTS {ldgsts} | @!PT pad {pad} | other {other}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fatbin", default=FATBIN)
    ap.add_argument("--kernels", default="conv2d_", help="only kernels whose name contains this")
    ap.add_argument("--listing", help="print this kernel's main loop without its FFMA")
    args = ap.parse_args(argv)
    if args.listing:
        instrs = sass(args.fatbin)[args.listing]
        start, end, _ = main_loop(instrs)
        for a, t in instrs:
            if start <= a <= end and opcode(t) != "FFMA":
                print(f"{a:#06x} {t}")
        return
    for name, body in main_loops(args.fatbin, args.kernels).items():
        print(line(name, body))


if __name__ == "__main__":
    main()
