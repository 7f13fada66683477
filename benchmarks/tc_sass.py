"""Static figures of the tensor-core kernels (kernels/gemm_tc.cu, conv_tc.cu) from
their sm_90 SASS: no GPU is run, every number is a static bound.

    python3 benchmarks/tc_sass.py                 # build/kernels/*_tc.fatbin (make kernels)
    python3 benchmarks/tc_sass.py --markdown      # the tables of benchmarks/notes-tensor-cores.md

Per kernel: registers, shared memory and spills (cuobjdump -res-usage), and in
the main loop (the backward branch whose body holds the most HMMA): HMMA,
LDSM (ldmatrix), LDGSTS (cp.async), other instructions, the HMMA fraction,
and the loop's bound against the dense tensor peak of an H100/H200 SM:
    per SM and clock: 1 HMMA (4 sub-partitions, one m16n8k8 tf32 or m16n8k16
    bf16 every 4 clocks each: 2048 / 4096 FLOP/clk/SM, i.e. ~495 / ~990
    TFLOP/s dense at 132 SMs, 1.83 GHz), 4 instructions issued, 128 bytes of
    shared memory (ldmatrix .x4 = 512 B, a 4-byte cp.async = 128 B written, a
    16-byte one 512 B, STS by its width);
    loop bound = HMMA / max(HMMA, instructions / 4, shared bytes / 128).
This assumes mma.sync runs at the datasheet tensor rate; on Hopper the full
rate needs wgmma, so a measured figure will be lower.
Per AlexNet layer (batch 128, net.layer_shapes("alexnet", 128)): the grid the
launcher picks (tile, split-K), the blocks per SM the registers and shared
memory allow, the tile and wave efficiencies, and
    static bound = loop bound x tile efficiency x wave efficiency
(prologue, epilogue, the split-K reduction and DRAM/L2 traffic are left out), and the
same with the split-K reduction's DRAM traffic (8 bytes per element of C per slice at
gemm_tc.DRAM_BW) added to the time: the trade the launch plan makes.
"""
import argparse
import glob
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMS = 132
CLOCK_HZ = 1.83e9
PEAK = {"tf32": 495e12, "bf16": 990e12}
REGS_PER_SM = 65536
SMEM_PER_SM = 228 * 1024
MAX_THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 32


def _threads():
    from convnet.kernel_ops.gemm_tc import TILES
    return {t: v[2] for t, v in TILES.items()}


THREADS = _threads()


def tool(name):
    """cuobjdump / nvdisasm: on the PATH, next to nvcc, or from the nvidia-cuda-* wheels."""
    import shutil
    found = shutil.which(name)
    if found:
        return found
    for pattern in ("/usr/local/cuda/bin/" + name,
                    os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia", "*", "bin", name)):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    raise SystemExit(f"{name} not found: pip install nvidia-cuda-cuobjdump (it is in the CUDA toolkit too)")


def sass(fatbin):
    """{kernel: [(address, instruction text)]} of the sm_90 code in a fatbin."""
    out = subprocess.run([tool("cuobjdump"), "-sass", "-arch", "sm_90", str(fatbin)],
                         capture_output=True, text=True, check=True).stdout
    kernels, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = kernels.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    return kernels


def resources(fatbin):
    """{kernel: {"regs", "smem", "stack", "local"}} from cuobjdump -res-usage (sm_90)."""
    out = subprocess.run([tool("cuobjdump"), "-res-usage", "-arch", "sm_90", str(fatbin)],
                         capture_output=True, text=True, check=True).stdout
    res, name = {}, None
    for line in out.splitlines():
        m = re.search(r"Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m and name:
            res[name] = dict(regs=int(m.group(1)), stack=int(m.group(2)), smem=int(m.group(3)),
                             local=int(m.group(4)))
    return res


def opcode(text):
    t = re.sub(r"^@!?U?P\w+\s+", "", text)       # predicate guard
    return t.split()[0] if t else ""


def main_loop(code):
    """(start, end) addresses of the backward branch whose body holds the most HMMA."""
    best, best_n = None, -1
    for addr, text in code:
        op = opcode(text)
        if not op.startswith("BRA"):
            continue
        m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
        if not m:
            continue
        target = int(m.group(1), 16)
        if target >= addr:
            continue
        n = sum(1 for a, t in code if target <= a <= addr and opcode(t).startswith("HMMA"))
        if n > best_n or (n == best_n and best and addr - target < best[1] - best[0]):
            best, best_n = (target, addr), n
    return best


def loop_stats(code):
    span = main_loop(code)
    if span is None:
        return None
    body = [opcode(t) for a, t in code if span[0] <= a <= span[1]]
    hmma = sum(op.startswith("HMMA") for op in body)
    ldsm = [op for op in body if op.startswith("LDSM")]
    ldgsts = sum(op.startswith("LDGSTS") for op in body)
    sts = [op for op in body if op.startswith("STS")]
    smem_bytes = 0
    for op in ldsm:                                   # LDSM.16.M88.4 / .MT88.2 / ...: matrices of 128 B
        m = re.search(r"\.(\d)$", op)
        smem_bytes += 128 * (int(m.group(1)) if m else 1)
    for op in body:                                   # 32 lanes x 4 or 16 bytes written
        if op.startswith("LDGSTS"):
            smem_bytes += 32 * (16 if ".128" in op else 8 if ".64" in op else 4)
    for op in sts:
        width = 16 if ".128" in op else 8 if ".64" in op else 2 if ".U16" in op or ".16" in op else 4
        smem_bytes += 32 * width
    n = len(body)
    bound = hmma / max(hmma, n / 4, smem_bytes / 128) if hmma else 0.0
    return dict(instructions=n, hmma=hmma, ldsm=len(ldsm), ldgsts=ldgsts, sts=len(sts),
                other=n - hmma - len(ldsm) - ldgsts - len(sts), hmma_fraction=hmma / n if n else 0.0,
                smem_bytes=smem_bytes, loop_bound=bound)


def blocks_per_sm(regs, threads, smem):
    per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = REGS_PER_SM // (per_warp * (threads // 32))
    by_smem = SMEM_PER_SM // (smem + 1024) if smem else MAX_BLOCKS_PER_SM   # 1 KB reserved per block
    return max(0, min(by_regs, by_smem, MAX_THREADS_PER_SM // threads, MAX_BLOCKS_PER_SM))


def kernel_table(fatbins):
    rows = {}
    for fb in fatbins:
        res = resources(fb)
        for name, code in sass(fb).items():
            st = loop_stats(code)
            r = res.get(name, {})
            threads = THREADS.get(name.rsplit("_", 1)[-1], 128)
            rows[name] = dict(file=Path(fb).stem, threads=threads, **r, loop=st,
                              bps=blocks_per_sm(r.get("regs", 0), threads, r.get("smem", 0)) if r else None)
    return rows


# --- the AlexNet layers -----------------------------------------------------------

def layer_gemms(batch=128):
    """[(layer, pass, kernel op, m, ncol, k, groups, fwd_ok)] of AlexNet's conv2-5 and fc6-8 as the
    `alexnet` config runs them (column a; a layer reading both columns concatenates them);
    fwd_ok: conv bwd_data may run on the forward's kernel (conv_tc.bwd_data_fwd_ok)."""
    from convnet.kernel_ops.conv_tc import bwd_data_fwd_ok
    from convnet.configs import load_config
    from convnet.net import layer_shapes
    shapes = layer_shapes("alexnet", batch)
    cfg = {L["name"]: L for L in load_config("alexnet")["LAYERS"]}
    out = []
    for name in ("conv2a", "conv3a", "conv4a", "conv5a"):
        ins, outs = shapes[name]
        n, _, h, w = ins[0]
        c = sum(s[1] for s in ins)
        _, f, oh, ow = outs
        kk = cfg[name]["size"]
        g = cfg[name].get("groups", 1)
        cg, fg = c // g, f // g
        vec = "_vec" if (cg * kk * kk) % 4 == 0 and kk * kk <= 32 else ""   # the launcher's conditions
        st, pd = cfg[name].get("stride", 1), cfg[name].get("pad", 0)
        out += [(name, "fwd", "conv2d_tc_fwd" + vec, fg, n * oh * ow, cg * kk * kk, g, False),
                (name, "bwd_data", "conv2d_tc_bwd_data" + ("_s1" if st == 1 and kk * kk <= 32 else ""),
                 cg, n * h * w, fg * kk * kk, g, bwd_data_fwd_ok(fg, kk, kk, st, st, pd, pd)),
                (name, "bwd_filter", "conv2d_tc_bwd_filter", fg, cg * kk * kk, n * oh * ow, g, False)]
    for name in ("fc6a", "fc7a", "fc8"):
        ins, outs = shapes[name]
        n = ins[0][0]
        n_in = sum(math.prod(s[1:]) for s in ins)
        n_out = outs[1]
        # the _vec kernels where the launcher takes them (rows of 4-multiple length; arrays aligned)
        out += [(name, "fwd", "fc_tc_fwd" + ("_vec" if n_in % 4 == 0 else ""), n_out, n, n_in, 1, False),
                (name, "bwd_data", "fc_tc_bwd_data" + ("_vec" if n_out % 4 == 0 else ""), n_in, n, n_out, 1, False),
                (name, "bwd_filter", "fc_tc_bwd_filter", n_out, n_in, n, 1, False)]
    return out


def launch_choice(op, m, ncol, k, g, fwd_ok=False):
    """(kernel op run, tile, splits, chunk) as convnet/kernel_ops/conv_tc.py and gemm_tc.py choose
    them: conv bwd_data runs as conv2d_tc_fwd_vec where conv_tc.bwd_data_plan takes that route."""
    from convnet.kernel_ops.conv_tc import bwd_data_plan
    from convnet.kernel_ops.gemm_tc import BASE_TILES, CONV_BWD_TILES, VEC_ALIGN, VEC_TILES, choose
    tiles = VEC_TILES if "_vec" in op else BASE_TILES
    if op.startswith("conv2d_tc_bwd_data"):    # split-K; the blocks of all groups count
        route, *plan = bwd_data_plan(m, g, ncol, k, fwd_ok, op == "conv2d_tc_bwd_data_s1")
        return ("conv2d_tc_fwd_vec" if route else op,) + tuple(plan)
    if op == "conv2d_tc_bwd_filter":           # the 48-row warp tiles too
        return (op,) + choose(m * g, ncol, k, None, None, tiles=CONV_BWD_TILES)
    if op.startswith("conv2d"):
        return (op,) + choose(m, ncol, k, None, 1, tiles=tiles)
    return (op,) + choose(m, ncol, k, None, None, align=VEC_ALIGN if "_vec" in op else 1, tiles=tiles)


def layer_table(rows, precision, batch=128):
    from convnet.precision import check_precision
    check_precision(precision)
    from convnet.kernel_ops.conv_tc import k_tile
    out = []
    for layer, pass_, op, m, ncol, k, g, fwd_ok in layer_gemms(batch):
        op, tile, splits, chunk = launch_choice(op, m, ncol, k, g, fwd_ok)
        name = f"{op}_{precision}_{tile}"
        r = rows.get(name)
        if r is None or r["loop"] is None:
            continue
        from convnet.kernel_ops.gemm_tc import TILES
        bm, bn, _ = TILES[tile]
        bk = k_tile(name)                            # tc_gemm.cuh's BK: 16, or 32 (some bf16 kernels)
        tiles_m, tiles_n = math.ceil(m / bm), math.ceil(ncol / bn)
        padded = tiles_m * bm * tiles_n * bn * splits * math.ceil(chunk / bk) * bk
        tile_eff = m * ncol * k / padded
        blocks = g * tiles_m * tiles_n * splits
        slots = SMS * max(1, r["bps"])
        wave_eff = blocks / (math.ceil(blocks / slots) * slots)
        bound = r["loop"]["loop_bound"] * tile_eff * wave_eff
        # the same with the split-K reduction's DRAM traffic added to the time (each slice's
        # partial C written and read once, 8 bytes per element per slice, at the launchers'
        # DRAM_BW): still a static bound, the one the launch plan trades against
        from convnet.kernel_ops.gemm_tc import DRAM_BW
        flops = 2 * m * ncol * k * g
        t = flops / (PEAK[precision] * bound) + (splits > 1) * splits * m * ncol * g * 8 / DRAM_BW
        out.append(dict(layer=layer, pass_=pass_, kernel=name, gemm=f"{m}x{ncol}x{k}" + (f" x{g}g" if g > 1 else ""),
                        splits=splits, blocks=blocks, bps=r["bps"], tile_eff=tile_eff, wave_eff=wave_eff,
                        loop_bound=r["loop"]["loop_bound"], bound=bound, bound_red=flops / (PEAK[precision] * t),
                        tflops=bound * PEAK[precision] / 1e12))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fatbin-dir", default=str(ROOT / "build" / "kernels"))
    p.add_argument("--markdown", action="store_true", help="markdown tables")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    fatbins = [Path(args.fatbin_dir) / f for f in ("gemm_tc.fatbin", "conv_tc.fatbin")]
    missing = [str(f) for f in fatbins if not f.exists()]
    if len(missing) == len(fatbins):
        raise SystemExit(f"missing {', '.join(missing)}: run make kernels (needs nvcc)")
    if missing:
        print(f"(missing {', '.join(missing)}: their kernels are left out)")
    fatbins = [f for f in fatbins if f.exists()]
    rows = kernel_table(fatbins)
    print("STATIC figures (sm_90 SASS, no GPU run): per kernel, the main loop")
    print("| kernel | threads | regs | smem B | spill/local B | blocks/SM | loop instr | HMMA | LDSM | LDGSTS | STS "
          "| other | HMMA frac | loop bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in sorted(rows.items()):
        st = r["loop"]
        if st is None:
            continue
        print(f"| {name} | {r['threads']} | {r.get('regs')} | {r.get('smem')} | {r.get('local', 0) + r.get('stack', 0)} "
              f"| {r['bps']} | {st['instructions']} | {st['hmma']} | {st['ldsm']} | {st['ldgsts']} | {st['sts']} "
              f"| {st['other']} | {100 * st['hmma_fraction']:.1f}% | {100 * st['loop_bound']:.1f}% |")
    for prec in ("tf32", "bf16"):
        print(f"\nSTATIC bound per AlexNet layer, batch {args.batch}, {prec} (dense peak {PEAK[prec] / 1e12:.0f} TFLOP/s)")
        print("| layer | pass | kernel | GEMM MxNxK | splits | blocks | blocks/SM | tile eff | wave eff "
              "| loop bound | static bound | TFLOP/s bound | with split-K reduction |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in layer_table(rows, prec, args.batch):
            print(f"| {r['layer']} | {r['pass_']} | {r['kernel']} | {r['gemm']} | {r['splits']} | {r['blocks']} "
                  f"| {r['bps']} | {100 * r['tile_eff']:.0f}% | {100 * r['wave_eff']:.0f}% "
                  f"| {100 * r['loop_bound']:.1f}% | {100 * r['bound']:.1f}% | {r['tflops']:.0f} "
                  f"| {100 * r['bound_red']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
