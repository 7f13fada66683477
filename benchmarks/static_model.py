"""A static performance model of the kernels on sm_90, read off the machine code.

    python3 benchmarks/static_model.py                  # every kernel, every AlexNet conv pass
    python3 benchmarks/static_model.py --kernels conv   # only kernels/conv.cu's kernels
    python3 benchmarks/static_model.py --no-write       # print, write no results file

No GPU is needed. The model takes the sm_90 machine code the Makefile builds
(build/kernels/*.fatbin, `make kernels` first, same flags as the shipped
build) and reads, per kernel:

- resources (cuobjdump --dump-resource-usage): registers, stack, local memory,
  shared memory (cuobjdump's figure includes the 1 KB every block reserves on
  sm_90; the kernel's own is that minus 1 KB), and spill/local traffic as the
  number of LDL/STL instructions in the SASS;
- occupancy on an sm_90 SM (65,536 registers, 228 KB shared, 2,048 threads,
  32 blocks, 64 warps): registers are allocated per warp in units of 256
  (per thread: a multiple of 8), shared memory per block is the kernel's own
  plus the 1 KB reservation;
- the main loop: every backward branch (a BRA whose target lies at or before
  it) closes a loop spanning [target, branch]. The main loop is, of the
  innermost loops with math (loops holding math instructions, FFMA, HMMA,
  HGMMA, ..., with no loop holding math nested inside them), the one with the
  most math instructions (ties: the shortest). Its instructions are counted statically, once each, whatever
  forward branches inside it skip (an if inside the loop counts as taken);
  loops nested inside it without the math (conv.cu's carry `while`s in the
  im2col walk, which run zero or a few times per K step) are left out of the
  counts that make the bound and counted once in `main_loop_with_inner`
  (the two give the range of the math fraction). A kernel without a loop with
  math is counted whole;
- the main loop's mix: math, other floating point, LDS/STS by width, LDG/STG
  by width, integer (uniform datapath included), control, other; the math
  fraction (math / all), which is the issue bound: an SM issues one warp
  instruction per scheduler per cycle, 4 per cycle, and does 4 FFMA warp
  instructions per cycle at its FP32 peak;
  (HMMA/HGMMA count as math too, but the bounds here are against the FP32
  FFMA peak: a tensor-core kernel needs its own peak before its figures mean
  anything);
- shared-memory wavefronts per math instruction, two ways: at least one
  wavefront per LDS/STS (all threads on one address or broadcasts: the lower
  bound, used in the bound below) and the width count, 32 threads x width /
  128 bytes (every thread on its own address, no conflicts). The SM serves one
  wavefront per cycle, so the shared-memory bound is math / (4 x wavefronts).

Per AlexNet conv layer pass (shapes derived from the `alexnet` config, batch
128, as two columns and as one device with groups) and per kept kernel
version, the launch geometry is the launcher's (convnet/kernel_ops/conv.py:
its tile function, split-K count and kernel names) and the model gives:
tile fill (useful multiply-adds over those the launched tiles do, padding and
gathered zeros included), blocks, waves on 132 SMs at the occupancy above
(blocks / (132 x blocks per SM)), the slot efficiency (waves / whole waves
started), the tail efficiency (blocks / 132 over ceil(blocks / 132): the
busiest SM's share), and the static upper bound on the fraction of FP32 peak

    min(issue bound, shared-memory bound, global-memory bound) x fill x tail efficiency

(the tail, not the slot efficiency: an SM with fewer resident blocks than it
holds may still issue at its full rate, so only the busiest SM's block count
bounds the time). The same with the slot efficiency is printed as `est`: what
the launch gets if each SM's rate is in proportion to its resident blocks --
an estimate, not a bound.
where the global-memory bound compares the pass's compulsory traffic (each
input read once, each output written once) at 4.8 TB/s with its FLOPs at
peak. Against the datasheet 66.9 TFLOP/s (H100/H200 SXM, 132 SMs x 128 FMA x
2 x 1.98 GHz) and 52 TFLOP/s (cuBLAS's reported FP32 rate there); predicted
ms = FLOPs / (bound x 66.9 TFLOP/s), plus split-K's reduction at the memory
bound. These are static upper bounds, never measurements.

Writes benchmarks/results/static-<commit>.json and prints one table. Without
cuobjdump (or nvdisasm) it says so in one line and exits 0.
"""
import argparse
import bisect
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

ROOT = common.ROOT

# --- the device (sm_90, H100/H200 SXM; datasheet leads) -------------------------
SM90 = dict(regs_per_sm=65536, smem_per_sm=228 * 1024, smem_per_block_max=227 * 1024,
            smem_reserved_per_block=1024, threads_per_sm=2048, blocks_per_sm=32,
            warps_per_sm=64, reg_unit=256, max_regs_per_thread=255, schedulers=4)
SMS = 132
CLOCK_HZ = 1.98e9
PEAK_FLOPS = SMS * 128 * 2 * CLOCK_HZ          # 66.9 TFLOP/s: 128 FP32 FMA per SM per cycle
CUBLAS_FLOPS = 52e12                           # FP32 rate cuBLAS is reported to reach there
DRAM_BYTES_S = 4.8e12                          # H200 HBM3e, datasheet
BATCH = 128

# --- instruction classes ----------------------------------------------------------
MATH = {"FFMA", "HMMA", "HGMMA", "IMMA", "DFMA", "DMMA", "QGMMA", "IGMMA", "BMMA"}
FP_OTHER = {"FADD", "FMUL", "FMNMX", "FSEL", "FSETP", "FCHK", "MUFU", "FRND", "HADD2", "HMUL2",
            "HFMA2", "FSET", "DADD", "DMUL", "DSETP", "F2F", "FSWZADD"}
INTEGER = {"IMAD", "IADD3", "IADD", "ISETP", "LOP3", "LOP", "LEA", "SHF", "SHL", "SHR", "IABS",
           "VIADD", "VIADDMNMX", "IMNMX", "VIMNMX", "SEL", "PRMT", "IMUL", "BFE", "BFI", "FLO",
           "POPC", "BREV", "IDP", "IMADSP", "ISCADD", "PLOP3", "P2R", "R2P", "I2F", "F2I", "I2I",
           "F2IP", "I2FP", "MOV", "MOV32I", "CS2R", "S2R", "S2UR", "LDC", "ULDC", "SHFL", "VOTE",
           "VOTEU", "CSET", "CSETP", "PSETP", "IMNMX", "LEPC", "R2UR", "UR2R"}
CONTROL = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BSSY", "BSYNC", "BAR", "BREAK",
           "BMOV", "WARPSYNC", "YIELD", "NANOSLEEP", "KILL", "BPT", "RPCMOV", "DEPBAR", "MEMBAR",
           "ERRBAR", "CCTL", "WARPGROUP", "ACQBULK", "SYNCS", "ELECT", "ENDCOLLECTIVE"}
LOCAL = {"LDL", "STL"}
NOT_ISSUED = {"NOP"}


def op_class(opcode):
    """The class of one SASS opcode without modifiers ("FFMA", "LDS", "UIADD3", ...)."""
    if opcode in MATH:
        return "math"
    if opcode in FP_OTHER:
        return "fp_other"
    if opcode in ("LDS", "LDSM"):
        return "lds"
    if opcode in ("STS", "STSM"):
        return "sts"
    if opcode in ("LDG", "LDGSTS", "LDGDEPBAR", "UTMALDG", "UBLKCP", "LD"):
        return "ldg"
    if opcode in ("STG", "ST", "UTMASTG", "RED", "REDG", "ATOM", "ATOMG", "ATOMS"):
        return "stg"
    if opcode in LOCAL:
        return "local"
    if opcode in CONTROL:
        return "control"
    if opcode in INTEGER or (opcode.startswith("U") and opcode[1:] in INTEGER | {"MOV", "SEL"}):
        return "int"
    if opcode.startswith("U"):          # the rest of the uniform datapath (UISETP, ULOP3, ...)
        return "int"
    return "other"


def access_width(opcode, modifiers):
    """Bytes per thread of a load/store from its modifiers (".128" -> 16; none -> 4)."""
    for m in modifiers:
        if m in ("128", "64", "32", "U8", "S8", "U16", "S16"):
            return {"128": 16, "64": 8, "32": 4, "U8": 1, "S8": 1, "U16": 2, "S16": 2}[m]
    if opcode == "LDSM":        # ldmatrix: .x4 = 16 bytes per thread
        for m in modifiers:
            if m in ("M88", "MT88"):
                continue
            if m in ("1", "2", "4"):
                return 4 * int(m)
        return 16
    return 4


@dataclass
class Instr:
    addr: int
    pred: str
    opcode: str
    modifiers: tuple
    operands: str
    target: int = None          # branch target address, if a direct branch

    @property
    def text(self):
        op = ".".join((self.opcode,) + self.modifiers)
        return f"{self.pred + ' ' if self.pred else ''}{op} {self.operands}".strip()


_LINE = re.compile(r"^\s*/\*([0-9a-fA-F]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_CUOBJ_FUNC = re.compile(r"^\s*Function\s*:\s*(\S+)")
_NVDIS_FUNC = re.compile(r"^\.text\.([A-Za-z_$][\w$]*):")
_PRED = re.compile(r"^(@!?U?P(?:T|\d+))\s+")
_HEX = re.compile(r"0x([0-9a-fA-F]+)")
_LABEL_REF = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(text):
    """cuobjdump -sass or nvdisasm output -> {function name: [Instr, ...]} in address order."""
    funcs, current, labels, pending = {}, None, {}, []
    for line in text.splitlines():
        m = _CUOBJ_FUNC.match(line) or _NVDIS_FUNC.match(line)
        if m:
            current = funcs.setdefault(m.group(1), [])
            labels, pending = {}, []
            continue
        m = _LABEL.match(line)
        if m and current is not None:
            pending.append(m.group(1))
            continue
        m = _LINE.match(line)
        if not m or current is None:
            continue
        addr, body = int(m.group(1), 16), m.group(2).strip()
        for name in pending:
            labels[name] = addr
        pending = []
        pred = ""
        p = _PRED.match(body)
        if p:
            pred, body = p.group(1), body[p.end():]
        head, _, operands = body.partition(" ")
        parts = head.split(".")
        ins = Instr(addr, pred, parts[0], tuple(parts[1:]), operands.strip())
        if ins.opcode in ("BRA", "JMP") or (ins.opcode == "BRA" and "DIV" in ins.modifiers):
            ref = _LABEL_REF.search(operands)
            if ref:
                ins.target = ref.group(1)          # resolved below, labels can come later
            else:
                hexes = _HEX.findall(operands)
                if hexes:
                    ins.target = int(hexes[-1], 16)
        ins._labels = labels
        current.append(ins)
    for instrs in funcs.values():
        for ins in instrs:
            if isinstance(ins.target, str):
                ins.target = ins._labels.get(ins.target)
            del ins._labels
    return funcs


def loops(instrs):
    """[(start index, end index)] of every loop: a branch back to an address at or before it."""
    addrs = [i.addr for i in instrs]
    out = []
    for j, ins in enumerate(instrs):
        if ins.target is not None and ins.target <= ins.addr:
            i = bisect.bisect_left(addrs, ins.target)
            if i < len(addrs) and addrs[i] == ins.target:
                out.append((i, j))
    return out


def main_loop(instrs):
    """(start, end) indices of the main loop: of the innermost loops with math (loops
    with math instructions and no loop with math nested inside), the one with the most
    math instructions (ties: the shortest); None when no loop holds math."""
    def n_math(i, j):
        return sum(op_class(x.opcode) == "math" for x in instrs[i:j + 1])
    with_math = [(i, j) for i, j in loops(instrs) if n_math(i, j)]
    best, key = None, None
    for i, j in with_math:
        if any(i <= a and b <= j and (a, b) != (i, j) for a, b in with_math):
            continue                    # a loop with math lies inside: not the innermost
        k = (n_math(i, j), -(j - i))
        if key is None or k > key:
            best, key = (i, j), k
    return best


def main_loop_body(instrs, loop):
    """The main loop's instructions without those of the loops nested in it (a nested
    loop with no math, such as a carry `while`, may run zero times per iteration: leaving
    it out keeps the issue bound an upper bound)."""
    i, j = loop
    inner = [(a, b) for a, b in loops(instrs) if i <= a and b <= j and (a, b) != (i, j)]
    return [x for k, x in enumerate(instrs[i:j + 1], i) if not any(a <= k <= b for a, b in inner)]


def mix(instrs):
    """The instruction mix of a range: counts per class, LDS/STS/LDG/STG by width, FFMA etc."""
    counts = {c: 0 for c in ("math", "fp_other", "lds", "sts", "ldg", "stg", "local", "int", "control", "other")}
    by_op, widths = {}, {}
    wf_min = wf_width = 0
    ldg_bytes = 0
    total = 0
    for x in instrs:
        if x.opcode in NOT_ISSUED:
            continue
        total += 1
        c = op_class(x.opcode)
        counts[c] += 1
        by_op[x.opcode] = by_op.get(x.opcode, 0) + 1
        if c in ("lds", "sts", "ldg", "stg", "local"):
            w = access_width(x.opcode, x.modifiers)
            key = f"{x.opcode}.{8 * w}"
            widths[key] = widths.get(key, 0) + 1
            if c in ("lds", "sts"):
                wf_min += 1
                wf_width += max(1, math.ceil(32 * w / 128))
            if c == "ldg":
                ldg_bytes += 32 * w
    m = counts["math"]
    return {"instructions": total, "classes": counts, "opcodes": dict(sorted(by_op.items())),
            "widths": dict(sorted(widths.items())),
            "math_fraction": m / total if total else 0.0,
            "smem_wavefronts_min": wf_min, "smem_wavefronts_width": wf_width,
            "wavefronts_per_math_min": wf_min / m if m else None,
            "wavefronts_per_math_width": wf_width / m if m else None,
            "ldg_bytes_per_warp": ldg_bytes}


def issue_and_smem_bounds(loop_mix):
    """(issue bound, shared-memory bound) on the fraction of the SM's math peak."""
    m, total = loop_mix["classes"]["math"], loop_mix["instructions"]
    if not m:
        return 0.0, 0.0
    issue = m / total
    wf = loop_mix["smem_wavefronts_min"]
    smem = 1.0 if wf == 0 else min(1.0, m / (SM90["schedulers"] * wf))
    return issue, smem


# --- occupancy ----------------------------------------------------------------------

def occupancy(regs, smem_bytes, threads, dev=SM90):
    """Blocks and warps per SM for a kernel of `regs` registers per thread, `smem_bytes`
    of its own shared memory per block (without the 1 KB reservation) and `threads` per
    block. Returns {blocks, warps, limit: the resource that sets it, per-limit counts}."""
    if threads < 1 or threads > 1024:
        raise ValueError(f"threads per block must be 1..1024, got {threads}")
    warps = math.ceil(threads / 32)
    regs_t = max(1, min(regs, dev["max_regs_per_thread"]))
    regs_warp = math.ceil(regs_t * 32 / dev["reg_unit"]) * dev["reg_unit"]
    smem_block = smem_bytes + dev["smem_reserved_per_block"]
    limits = {
        "blocks": dev["blocks_per_sm"],
        "threads": min(dev["threads_per_sm"] // (warps * 32), dev["warps_per_sm"] // warps),
        "registers": (dev["regs_per_sm"] // regs_warp) // warps,
        "shared": dev["smem_per_sm"] // smem_block if smem_bytes <= dev["smem_per_block_max"] else 0,
    }
    blocks = min(limits.values())
    limit = min(limits, key=lambda k: (limits[k], list(limits).index(k)))
    return {"blocks": blocks, "warps": blocks * warps, "limit": limit, "limits": limits,
            "regs_per_warp": regs_warp, "smem_per_block": smem_block}


def waves(blocks, blocks_per_sm, sms=SMS):
    """(waves, slot efficiency): blocks over the SMs' slots (SMs x blocks per SM), and
    waves / whole waves started (each SM's rate in proportion to its resident blocks)."""
    if blocks_per_sm < 1:
        return float("inf"), 0.0
    w = blocks / (sms * blocks_per_sm)
    return w, (w / math.ceil(w) if w > 0 else 0.0)


def tail_efficiency(blocks, sms=SMS):
    """Blocks per SM on average over those of the busiest SM, ceil(blocks / SMs): no SM
    works faster than its full rate however many of its blocks are resident, so this
    bounds the fraction of the chip a launch keeps busy (the slot efficiency above,
    which assumes a lone block runs no faster than one of a full SM, is lower)."""
    if blocks < 1:
        return 0.0
    return (blocks / sms) / math.ceil(blocks / sms)


def launch_bound(kernel, blocks, threads, flops, min_bytes, useful_fma=None, launched_fma=None,
                 sms=SMS, peak=PEAK_FLOPS, bandwidth=DRAM_BYTES_S):
    """The static upper bound for one launch of an analysed kernel: the tightest of the
    issue, shared-memory and global-memory bounds, times fill and wave efficiency."""
    occ = occupancy(kernel["registers"], kernel["smem_bytes"], threads)
    w, slots = waves(blocks, occ["blocks"], sms)
    tail = tail_efficiency(blocks, sms) if occ["blocks"] else 0.0
    loop = kernel["main_loop"]
    issue, smem = issue_and_smem_bounds(loop)
    t_math = flops / peak
    t_mem = min_bytes / bandwidth
    gmem = 1.0 if t_mem == 0 else min(1.0, t_math / t_mem)
    fill = 1.0 if not launched_fma else useful_fma / launched_fma
    terms = {"issue": issue, "smem": smem, "gmem": gmem}
    limiter = min(terms, key=terms.get)
    bound = terms[limiter] * fill * tail
    estimate = terms[limiter] * fill * slots
    return {"blocks": blocks, "threads": threads, "blocks_per_sm": occ["blocks"],
            "occupancy_limit": occ["limit"], "waves": w, "wave_eff": slots, "tail_eff": tail, "fill": fill,
            "issue_bound": issue, "smem_bound": smem, "gmem_bound": gmem, "limiter": limiter,
            "bound": bound, "tflops": bound * peak / 1e12, "pct_peak": 100 * bound,
            "pct_cublas": 100 * bound * peak / CUBLAS_FLOPS,
            "ms": (flops / (bound * peak) * 1e3) if bound > 0 else float("inf"),
            "estimate": estimate,
            "estimate_ms": (flops / (estimate * peak) * 1e3) if estimate > 0 else float("inf")}


# --- tools and building -------------------------------------------------------------

def find_tool(name):
    """A CUDA binary tool on the PATH, in the CUDA toolkit, or from PyPI's nvidia-cuda-* wheels."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/local/cuda/bin",):
        p = Path(d) / name
        if p.exists():
            return str(p)
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for p in sorted(Path(base).glob(f"cu*/bin/{name}")) + sorted(Path(base).glob(f"*/bin/{name}")):
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return None


def makefile_nvcc_flags():
    """The Makefile's nvcc flags for one sm_90 cubin (its flags, with sm_90 as the only target)."""
    r = subprocess.run(["make", "--no-print-directory", "-s", "-C", str(ROOT), "nvcc-flags"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"`make nvcc-flags` failed: {r.stderr.strip()[-200:]}")
    return r.stdout.split()


def build_cubin(source, out, flags=None, include=None):
    """nvcc -cubin for sm_90 with the Makefile's flags; returns the ptxas report (stderr)."""
    nvcc = find_tool("nvcc")
    if not nvcc:
        raise RuntimeError("nvcc not found")
    flags = list(flags or makefile_nvcc_flags())
    cmd = [nvcc, *flags, "-gencode", "arch=compute_90,code=sm_90", "-Xptxas", "-v", "-cubin",
           "-o", str(out), str(source)] + ([f"-I{include}"] if include else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed on {Path(source).name}: {r.stderr.strip()[-400:]}")
    return r.stdout + r.stderr


_RES_FUNC = re.compile(r"^\s*Function\s+([^:\s]+):")
_RES_VALS = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")


def parse_resource_usage(text):
    """cuobjdump --dump-resource-usage -> {kernel: {registers, stack_bytes, local_bytes,
    smem_bytes (the kernel's own), smem_reported (with the 1 KB reservation)}}."""
    out, current = {}, None
    for line in text.splitlines():
        m = _RES_FUNC.match(line)
        if m:
            current = m.group(1)
            continue
        if current and "REG:" in line:
            vals = dict((k, int(v)) for k, v in _RES_VALS.findall(line))
            shared = vals.get("SHARED", 0)
            out[current] = {"registers": vals.get("REG", 0), "stack_bytes": vals.get("STACK", 0),
                            "local_bytes": vals.get("LOCAL", 0), "smem_reported": shared,
                            "smem_bytes": max(0, shared - SM90["smem_reserved_per_block"])}
            current = None
    return out


def disassemble(binary, cuobjdump=None, nvdisasm=None):
    """(SASS text, resource-usage text) of the sm_90 code in a cubin or fatbin."""
    cuobjdump = cuobjdump or find_tool("cuobjdump")
    nvdisasm = nvdisasm or find_tool("nvdisasm")
    if cuobjdump:
        sass = subprocess.run([cuobjdump, "-sass", "-arch", "sm_90", str(binary)],
                              capture_output=True, text=True, timeout=120)
        res = subprocess.run([cuobjdump, "--dump-resource-usage", "-arch", "sm_90", str(binary)],
                             capture_output=True, text=True, timeout=120)
        if sass.returncode != 0:
            raise RuntimeError(f"cuobjdump failed on {binary}: {sass.stderr.strip()[-200:]}")
        return sass.stdout, res.stdout
    if nvdisasm and str(binary).endswith(".cubin"):
        sass = subprocess.run([nvdisasm, "-c", str(binary)], capture_output=True, text=True, timeout=120)
        if sass.returncode != 0:
            raise RuntimeError(f"nvdisasm failed on {binary}: {sass.stderr.strip()[-200:]}")
        return sass.stdout, ""
    raise RuntimeError("no cuobjdump (nor nvdisasm for a cubin)")


def analyse_binary(binary, ptxas_text=""):
    """{kernel: analysis} for every kernel in a cubin/fatbin."""
    sass, res_text = disassemble(binary)
    funcs = parse_sass(sass)
    res = parse_resource_usage(res_text)
    ptx = common.parse_ptxas(ptxas_text) if ptxas_text else {}
    out = {}
    for name, instrs in sorted(funcs.items()):
        r = dict(res.get(name) or {})
        if not r and name in ptx:        # nvdisasm path: resources from ptxas -v
            p = ptx[name]
            r = {"registers": p["registers"], "stack_bytes": p["stack_bytes"], "local_bytes": 0,
                 "smem_bytes": p["smem_bytes"], "smem_reported": p["smem_bytes"] + 1024}
        if name in ptx:
            r["spill_store_bytes"] = ptx[name]["spill_store_bytes"]
            r["spill_load_bytes"] = ptx[name]["spill_load_bytes"]
        loop = main_loop(instrs)
        body = instrs[loop[0]:loop[1] + 1] if loop else instrs
        outer = main_loop_body(instrs, loop) if loop else instrs
        out[name] = dict(r, instructions=sum(i.opcode not in NOT_ISSUED for i in instrs),
                         local_instructions=sum(i.opcode in LOCAL for i in instrs),
                         loops=len(loops(instrs)),
                         loop_span=[f"{body[0].addr:#06x}", f"{body[-1].addr:#06x}"] if loop else None,
                         main_loop=mix(outer), main_loop_with_inner=mix(body))
    return out


def analyse_kernels(files=None, make=True):
    """Every kernels/*.cu (or those named) from the Makefile's fatbins -> {file: {kernel: ...}}."""
    if make:
        r = subprocess.run(["make", "--no-print-directory", "-s", "-C", str(ROOT), "kernels"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"`make kernels` failed: {r.stderr.strip()[-300:]}")
    sources = sorted((ROOT / "kernels").glob("*.cu"))
    if files:
        sources = [s for s in sources if s.stem in files]
    out = {}
    for src in sources:
        fatbin = ROOT / "build" / "kernels" / f"{src.stem}.fatbin"
        if not fatbin.exists():
            raise RuntimeError(f"{fatbin.relative_to(ROOT)} is missing (nvcc not found by make?)")
        out[src.stem] = analyse_binary(fatbin)
    return out


# --- AlexNet conv passes ---------------------------------------------------------------

def _cdiv(a, b):
    return -(-a // b)


def conv_launch(conv, pass_, version, layer, n=BATCH, tile_rows=None):
    """The launch plan of one conv pass at one version, read from the launcher's own
    functions and constants (convnet/kernel_ops/conv.py): kernel name, blocks, threads,
    useful and launched multiply-adds, compulsory bytes, split-K reduction bytes."""
    xs, ws, ys = layer.shapes(n)
    geo = conv.Geometry.of("static_model", xs, ws, layer.stride, layer.pad, layer.groups)
    nb, c, h, w, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo.args
    cg, fg = c // g, f // g
    useful = nb * f * oh * ow * cg * kh * kw
    sizes = {"x": nb * c * h * w, "w": f * cg * kh * kw, "y": nb * f * oh * ow}
    if pass_ == "fwd":
        m, cols, k = fg, nb * oh * ow, cg * kh * kw
        traffic = (sizes["x"] + sizes["w"] + sizes["y"] + f) * 4
        name_stem = "conv2d_fwd"
    elif pass_ == "bwd_data":
        m, cols, k = cg, nb * h * w, fg * kh * kw
        traffic = (sizes["y"] + sizes["w"] + sizes["x"]) * 4
        name_stem = "conv2d_bwd_data"
    elif pass_ == "bwd_filter":
        m, cols, k = fg, cg * kh * kw, nb * oh * ow
        traffic = (sizes["y"] + sizes["x"] + sizes["w"]) * 4
        name_stem = "conv2d_bwd_filter"
    else:
        raise ValueError(f"unknown pass {pass_!r}")
    if version == "v4":
        v4 = conv.v4_plan(geo, pass_, tile_rows)
        if v4 is None:                   # the launcher runs v3 where v4 does not apply
            version, tile_rows = "v3", None
        else:
            return _v4_launch(conv, v4, pass_, geo, m, cols, useful, traffic, sizes, name_stem)
    tm, tn, threads, suffix = conv._tile(version, m, tile_rows)
    plan = {"useful_fma": useful, "bytes": traffic, "reduce_bytes": 0, "splits": 1,
            "gemm": (m, cols, k), "tile": (tm, tn), "threads": threads, "groups": g}
    if version == "v1":
        outputs = {"fwd": sizes["y"], "bwd_data": sizes["x"], "bwd_filter": sizes["w"]}[pass_]
        blocks = _cdiv(outputs, conv.V1_THREADS)
        plan.update(kernel=f"{name_stem}_v1", blocks=blocks, launched_fma=useful * blocks * threads / outputs)
        return plan
    unit = pass_ == "bwd_data" and version == "v3" and sh == sw == 1
    plan["kernel"] = f"{name_stem}_{version}" + ("_s1" if unit else "") + suffix
    if pass_ == "bwd_filter":
        splits, chunk = conv.backward_filter_splits(geo, version, tile_rows)
        blocks = _cdiv(cols, tn) * _cdiv(m, tm) * g * splits
        launched = blocks * tm * tn * chunk
        plan.update(splits=splits, k_chunk=chunk)
        if splits > 1:        # workspace written by the GEMM, read back by the reduction
            plan["bytes"] += (splits - 1) * sizes["w"] * 4
            plan["reduce_bytes"] = (splits + 1) * sizes["w"] * 4
    else:
        blocks = _cdiv(cols, tn) * _cdiv(m, tm) * g
        launched = blocks * tm * tn * k
    plan.update(blocks=blocks, launched_fma=launched)
    return plan


def _v4_launch(conv, v4, pass_, geo, m, cols, useful, traffic, sizes, name_stem):
    """The launch plan of a v4 pass from the launcher's own V4Plan (conv.v4_plan): tile,
    K tiles per slice, splits (a split-K launch writes a workspace the reduce kernel reads)."""
    if pass_ == "bwd_filter" and v4.masked:
        cols = geo.taps * v4.run         # (tap, padded channel run) columns
    tn = conv.V4_TILE_N
    blocks = geo.groups * _cdiv(m, v4.rows) * _cdiv(cols, tn) * v4.splits
    launched = blocks * v4.rows * tn * v4.tps * conv.V4_BK
    out = {"fwd": sizes["y"], "bwd_data": sizes["x"], "bwd_filter": sizes["w"]}[pass_]
    plan = {"useful_fma": useful, "bytes": traffic, "reduce_bytes": 0, "splits": v4.splits,
            "gemm": (m, cols, v4.k_tiles * conv.V4_BK), "tile": (v4.rows, tn), "threads": v4.threads,
            "groups": geo.groups, "kernel": f"{name_stem}_v4{v4.suffix}", "blocks": blocks,
            "launched_fma": launched}
    if v4.splits > 1:
        plan["bytes"] += (v4.splits - 1) * out * 4
        plan["reduce_bytes"] = (v4.splits + 1) * out * 4
    return plan


def model_pass(kernels, conv, pass_, version, layer, n=BATCH):
    """One row: the launch plan and its static bound."""
    plan = conv_launch(conv, pass_, version, layer, n)
    kern = kernels.get(plan["kernel"])
    if kern is None:
        raise RuntimeError(f"kernel {plan['kernel']} not found in kernels/conv.cu's sm_90 code")
    flops = 2 * plan["useful_fma"]
    b = launch_bound(kern, plan["blocks"], plan["threads"], flops, plan["bytes"],
                     plan["useful_fma"], plan["launched_fma"])
    reduce_ms = plan["reduce_bytes"] / DRAM_BYTES_S * 1e3
    row = {"layer": layer.name, "split": layer.split, "pass": pass_, "version": version,
           "kernel": plan["kernel"], "x_shape": layer.shapes(n)[0], "w_shape": layer.shapes(n)[1],
           "gemm_mnk": plan["gemm"], "tile": plan["tile"], "splits": plan["splits"], "flops": flops,
           "math_fraction": kern["main_loop"]["math_fraction"], **b}
    row["reduce_ms"] = reduce_ms
    row["ms"] = b["ms"] + reduce_ms
    row["estimate_ms"] = b["estimate_ms"] + reduce_ms
    return row


def alexnet_rows(kernels, versions=None, n=BATCH, config="alexnet"):
    conv = importlib.import_module("convnet.kernel_ops.conv")
    # the direct versions; Winograd's bound is benchmarks/conv_model.py's (its transforms
    # are three kernels per pass, which this per-kernel model does not add up)
    versions = versions or list(conv.DIRECT_VERSIONS)
    rows = []
    for layer in common.alexnet_conv_layers(config):
        for pass_ in layer.passes():
            for v in versions:
                rows.append(model_pass(kernels, conv, pass_, v, layer, n))
    return rows


def iteration_totals(rows, conv):
    """Predicted ms of the conv passes of one training iteration, per form and version
    (and 'shipped': each pass at conv.SHIPPED's version)."""
    ops = {"fwd": "conv2d_forward", "bwd_data": "conv2d_backward_data", "bwd_filter": "conv2d_backward_filter"}
    out = {}
    for r in rows:
        for label in (r["version"],) + (("shipped",) if conv.SHIPPED[ops[r["pass"]]] == r["version"] else ()):
            key = (r["split"], label)
            t = out.setdefault(key, {"split": r["split"], "version": label, "ms": 0.0, "estimate_ms": 0.0,
                                     "flops": 0})
            # one device: the listed layers; two columns: each column layer runs twice
            times = 2 if r["split"] == "column" else 1
            t["ms"] += times * r["ms"]
            t["estimate_ms"] += times * r["estimate_ms"]
            t["flops"] += times * r["flops"]
    for t in out.values():
        t["tflops"] = t["flops"] / (t["ms"] * 1e-3) / 1e12
        t["pct_peak"] = 100 * t["tflops"] * 1e12 / PEAK_FLOPS
    return list(out.values())


# --- output ------------------------------------------------------------------------------

def kernel_table(analysis):
    lines = [f"{'kernel':<30} {'regs':>4} {'smem':>6} {'lmem':>4} {'blk/SM':>6} {'warps':>5} "
             f"{'loop':>5} {'FFMA':>5} {'LDS(w)':>12} {'STS':>4} {'LDG':>4} {'int':>4} {'ctl':>4} "
             f"{'math%':>11} {'wf/m':>9}"]
    for file, kernels in analysis.items():
        for name, k in kernels.items():
            threads = k.get("threads_hint", 256)
            occ = occupancy(k["registers"], k["smem_bytes"], threads)
            m = k["main_loop"]
            c = m["classes"]
            lo = 100 * k["main_loop_with_inner"]["math_fraction"]
            frac = f"{lo:.1f}-{100 * m['math_fraction']:.1f}%" if abs(lo - 100 * m["math_fraction"]) > 0.05 \
                else f"{lo:.1f}%"
            lds = "/".join(f"{v}" for key, v in m["widths"].items() if key.startswith("LDS")) or "0"
            wf = (f"{m['wavefronts_per_math_min']:.2f}-{m['wavefronts_per_math_width']:.2f}"
                  if m["wavefronts_per_math_min"] is not None else "-")
            lines.append(f"{name:<30} {k['registers']:>4} {k['smem_bytes']:>6} {k['local_bytes']:>4} "
                         f"{occ['blocks']:>6} {occ['warps']:>5} {m['instructions']:>5} "
                         f"{m['opcodes'].get('FFMA', 0):>5} {lds:>12} {c['sts']:>4} {c['ldg']:>4} "
                         f"{c['int']:>4} {c['control']:>4} {frac:>11} {wf:>9}")
    return lines


def pass_table(rows):
    lines = [f"{'layer':<10} {'pass':<10} {'ver':<3} {'kernel':<26} {'blocks':>6} {'b/SM':>4} {'waves':>5} "
             f"{'slot':>4} {'tail':>4} {'fill':>4} {'issue':>5} {'smem':>4} {'gmem':>4} {'bound':>6} "
             f"{'TFLOP/s':>7} {'%52T':>4} {'ms':>6} {'est':>5} {'est ms':>6}"]
    for r in rows:
        lines.append(f"{r['layer']:<10} {r['pass']:<10} {r['version']:<3} {r['kernel']:<26} {r['blocks']:>6} "
                     f"{r['blocks_per_sm']:>4} {r['waves']:>5.2f} {r['wave_eff']:>4.2f} {r['tail_eff']:>4.2f} "
                     f"{r['fill']:>4.2f} {r['issue_bound']:>5.2f} {r['smem_bound']:>4.2f} {r['gmem_bound']:>4.2f} "
                     f"{100 * r['bound']:>5.1f}% {r['tflops']:>7.1f} {r['pct_cublas']:>3.0f}% {r['ms']:>6.3f} "
                     f"{100 * r['estimate']:>4.0f}% {r['estimate_ms']:>6.3f}")
    return lines


def write(doc, directory=None):
    commit, dirty = common.git_commit()
    directory = Path(directory or common.RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"static-{commit}{'-dirty' if dirty else ''}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(common._clean(dict(doc, commit=commit, dirty=dirty)), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernels", default="", help="comma list of kernels/*.cu stems (default all)")
    p.add_argument("--versions", default="", help="conv versions to model (default every kept one)")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--no-write", action="store_true", help="print only, write no results file")
    p.add_argument("--out", default=None, help="directory of the results file (default benchmarks/results)")
    p.add_argument("--no-make", action="store_true", help="use build/kernels as it is (no `make kernels`)")
    args = p.parse_args(argv)
    if not (find_tool("cuobjdump") or find_tool("nvdisasm")):
        print("static_model: skipped: neither cuobjdump nor nvdisasm found (pip install "
              "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, or `make` with the network)")
        return 0
    files = [s.strip() for s in args.kernels.split(",") if s.strip()] or None
    analysis = analyse_kernels(files, make=not args.no_make)
    conv_mod = importlib.import_module("convnet.kernel_ops.conv")
    for name, k in analysis.get("conv", {}).items():     # the threads the launcher uses
        k["threads_hint"] = conv_mod.V1_THREADS
        for v in ("v2", "v3"):
            if f"_{v}" in name:
                k["threads_hint"] = conv_mod._tile(v, 1)[2]
    print(f"static model, sm_90 machine code ({SMS} SMs, FP32 peak {PEAK_FLOPS / 1e12:.1f} TFLOP/s by the "
          f"datasheet, {DRAM_BYTES_S / 1e12:.1f} TB/s); STATIC UPPER BOUNDS, not measurements")
    print("per kernel (main loop = of the innermost loops with math, the one with the most; math% = with its "
          "math-free inner loops counted once .. left out; blk/SM and warps at 256 threads/block unless the "
          "launcher says; wf/m = shared wavefronts per math instruction, broadcast .. no broadcast):")
    for line in kernel_table(analysis):
        print("  " + line)
    doc = {"benchmark": "static_model", "date": common.utc_now().isoformat(timespec="seconds"),
           "device_model": {"sms": SMS, "clock_hz": CLOCK_HZ, "peak_flops": PEAK_FLOPS,
                            "cublas_flops": CUBLAS_FLOPS, "dram_bytes_s": DRAM_BYTES_S, **SM90},
           "kernels": analysis}
    if "conv" in analysis:
        versions = [s.strip() for s in args.versions.split(",") if s.strip()] or None
        rows = alexnet_rows(analysis["conv"], versions, args.batch)
        tot = iteration_totals(rows, conv_mod)
        print(f"AlexNet conv passes, batch {args.batch}: bound = min(issue, smem, gmem) x fill x tail (static "
              f"upper bound; TFLOP/s, %52T = against 52 TFLOP/s, and ms at it); waves = blocks / (132 x b/SM), "
              f"slot = waves / whole waves; est = the bound with slot in place of tail (an SM's rate in "
              f"proportion to its resident blocks: not a bound):")
        for line in pass_table(rows):
            print("  " + line)
        print("conv passes of one iteration (columns: both columns' layers, one after the other):")
        for t in tot:
            print(f"  {t['split']:<7} {t['version']:<8} {t['ms']:8.2f} ms  {t['tflops']:5.1f} TFLOP/s "
                  f"({t['pct_peak']:.0f}% of {PEAK_FLOPS / 1e12:.1f}) at the bound; {t['estimate_ms']:.2f} ms "
                  f"at the slot estimate")
        doc.update(batch=args.batch, rows=rows, iteration=tot)
    if not args.no_write:
        print(f"results: {write(doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
