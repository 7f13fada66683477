"""Static bounds of the implicit-GEMM convolutions at AlexNet's shapes (no GPU needed).

    python benchmarks/conv_model.py [--batch 128] [--versions v3,v4] [--markdown]

For every pass of benchmarks/conv_throughput.py's LAYERS (one device with
groups, and one column), the bound on the FP32 rate each kernel version can
reach on an H100 SXM5 (132 SMs, 66.9 TFLOP/s FMA peak, 3.35 TB/s), from:

- the FFMA share of the issue slots in the kernel's sm_90 main loop
  (benchmarks/conv_sass.py reads it from build/kernels/conv.fatbin);
- tile fill: the useful share of the padded GEMM (M to the row tile, columns
  to 128, K to whole K tiles, v4's padded channel runs and per-image pixel
  tiles);
- whole waves: blocks x slices against SMs x blocks per SM, each block
  running its slice's K steps at (FFMA share x peak / blocks per SM);
- memory passes outside the main loop at HBM bandwidth: v4's weight
  rearrangement (fwd, bwd_data) and the split-K workspace (written, read back,
  the output written once more); Winograd's transforms (x in, V out, V and U
  into the GEMMs, M out and back in, y out).

For Winograd the rate is effective: the direct convolution's FLOPs over the
predicted time (its GEMMs do 2.25x fewer multiplications, less the padding of
the output to whole 2x2 tiles).

bound = FLOPs / (main-loop time + memory passes), as a share of peak. It is an
upper bound: stalls (latency, bank conflicts, the barrier), the prologue and
the epilogue are not counted. Nothing here is a measurement.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import conv_sass  # noqa: E402
from benchmarks.conv_throughput import LAYERS  # noqa: E402
from convnet.kernel_ops import conv  # noqa: E402

PEAK = conv.MODEL_SM_FLOPS * conv.DEFAULT_SMS      # 66.9e12
HBM = conv.MODEL_HBM
KERNEL = {"fwd": "conv2d_fwd", "bwd_data": "conv2d_bwd_data", "bwd_filter": "conv2d_bwd_filter"}


def _cdiv(a, b):
    return -(-a // b)


def v4_row(geo, pass_, ffma):
    plan = conv.v4_plan(geo, pass_)
    if plan is None:
        return None
    m, ncol, k = geo.gemm(pass_)
    if pass_ == "bwd_filter":
        ncol = geo.taps * plan.run if plan.masked else ncol
        kpad = plan.k_tiles * conv.V4_BK
    else:
        kpad = plan.kp
    rows, bps = plan.rows, conv.V4_BLOCKS_PER_SM[plan.rows]
    blocks = geo.groups * _cdiv(m, rows) * _cdiv(ncol, conv.V4_TILE_N)
    padded = 2.0 * geo.groups * _cdiv(m, rows) * rows * _cdiv(ncol, conv.V4_TILE_N) * conv.V4_TILE_N * kpad
    kernel = f"{KERNEL[pass_]}_v4{plan.suffix}"
    frac = ffma[kernel]
    waves = _cdiv(blocks * plan.splits, bps * conv.DEFAULT_SMS)
    t_main = waves * plan.tps * conv._step_seconds(rows, conv.V4_TILE_N, conv.V4_BK, bps) / frac
    out_bytes = 4 * (geo.groups * m * geo.gemm(pass_)[1])
    t_extra = (2 * plan.splits + 1) * out_bytes / HBM if plan.splits > 1 else 0.0
    if pass_ != "bwd_filter":
        at = geo.groups * plan.kp * _cdiv(m, rows) * rows
        t_extra += 4 * (geo.f * geo.cg * geo.taps + at) / HBM
    return dict(kernel=kernel, tile=f"{rows}x128", splits=plan.splits, fill=geo.flops / padded,
                waves=blocks * plan.splits / (waves * bps * conv.DEFAULT_SMS), ffma=frac,
                bound=geo.flops / (t_main + t_extra) / PEAK, seconds=t_main + t_extra)


def v3_row(geo, pass_, ffma):
    m, ncol, k = geo.gemm(pass_)
    rows = conv._v3_rows(m)
    suffix = conv.V3_ROWS[rows]
    unit = pass_ == "bwd_data" and (geo.sh, geo.sw) == (1, 1)
    kernel = f"{KERNEL[pass_]}_v3" + ("_s1" if unit else "") + suffix
    blocks = geo.groups * _cdiv(m, rows) * _cdiv(ncol, 128)
    if pass_ == "bwd_filter":
        splits, chunk = conv.backward_filter_splits(geo, "v3")
        steps = chunk // 8
    else:
        splits, steps = 1, _cdiv(k, 8)
    padded = 2.0 * geo.groups * _cdiv(m, rows) * rows * _cdiv(ncol, 128) * 128 * splits * steps * 8
    frac = ffma[kernel]
    waves = _cdiv(blocks * splits, 2 * conv.DEFAULT_SMS)
    t_main = waves * steps * conv._step_seconds(rows, 128, 8, 2) / frac
    t_extra = (2 * splits + 1) * 4 * geo.f * ncol / HBM if splits > 1 else 0.0
    return dict(kernel=kernel, tile=f"{rows}x128", splits=splits, fill=geo.flops / padded,
                waves=blocks * splits / (waves * 2 * conv.DEFAULT_SMS), ffma=frac,
                bound=geo.flops / (t_main + t_extra) / PEAK, seconds=t_main + t_extra)


def wino_row(geo, pass_, ffma):
    """F(2x2, 3x3): input transform + 16*G GEMMs (the v4 engine) + output transform;
    the transforms at HBM bandwidth (each reads and writes its tensors once)."""
    if not conv.winograd_applies(geo, pass_):
        return None
    if pass_ == "bwd_data":                 # the forward of dy with the flipped filters
        geo = conv.Geometry.of("conv_model", geo.y_shape, (geo.c, geo.fg, 3, 3), 1,
                               (2 - geo.ph, 2 - geo.pw), geo.groups)
    th, tw, p = conv.winograd_tiles(geo)
    rows, _, _, suffix = conv._tile("v4", geo.fg)
    bps = conv.V4_BLOCKS_PER_SM[rows]
    kp = _cdiv(geo.cg, conv.V4_BK) * conv.V4_BK
    blocks = 16 * geo.groups * _cdiv(geo.fg, rows) * _cdiv(p, conv.V4_TILE_N)
    kernel = f"conv2d_wino_gemm{suffix}"
    frac = ffma[kernel]
    waves = _cdiv(blocks, bps * conv.DEFAULT_SMS)
    t_gemm = waves * (kp // conv.V4_BK) * conv._step_seconds(rows, conv.V4_TILE_N, conv.V4_BK, bps) / frac
    gemm_flops = 2.0 * 16 * geo.groups * geo.fg * geo.cg * p
    padded = 2.0 * 16 * geo.groups * _cdiv(geo.fg, rows) * rows * _cdiv(p, 128) * 128 * kp
    move = 4 * (geo.n * geo.c * geo.h * geo.w + 16 * geo.c * p        # x in, V out
                + 16 * geo.c * p + 16 * geo.f * p                      # the GEMMs' operands and result
                + 16 * geo.f * p + geo.n * geo.f * geo.oh * geo.ow     # M in, y out
                + 2 * 16 * geo.f * geo.cg)                             # U (made and read)
    seconds = t_gemm + move / HBM
    return dict(kernel=kernel, tile=f"{rows}x128", splits=1, fill=gemm_flops / padded,
                waves=blocks / (waves * bps * conv.DEFAULT_SMS), ffma=frac,
                bound=geo.flops / seconds / PEAK, seconds=seconds,
                saving=geo.flops / gemm_flops)


MODELS = {"v3": v3_row, "v4": v4_row, "winograd": wino_row}


def table(batch=128, versions=("v3", "v4", "winograd"), fatbin=conv_sass.FATBIN):
    ffma = {name: conv_sass.ffma_fraction(body) for name, body in conv_sass.main_loops(fatbin).items()}
    rows = []
    for layer in LAYERS:
        xs, ws, _ = layer.shapes(batch)
        geo = conv.Geometry.of("conv_model", xs, ws, layer.stride, layer.pad, layer.groups)
        for pass_ in layer.passes():
            row = {"layer": layer.name, "pass": pass_, "gemm": "x".join(map(str, geo.gemm(pass_))),
                   "gflop": geo.flops / 1e9}
            for v in versions:
                row[v] = MODELS[v](geo, pass_, ffma)
            rows.append(row)
    return rows


def totals(rows, version, split):
    """All passes of one split together; a pass without this version counts with v4."""
    sel = [r for r in rows if (r["layer"].endswith("/col")) == (split == "column")]
    flops = sum(r["gflop"] for r in sel) * 1e9
    return flops / sum((r[version] or r["v4"])["seconds"] for r in sel) / PEAK


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--versions", default="v3,v4,winograd")
    ap.add_argument("--fatbin", default=conv_sass.FATBIN)
    args = ap.parse_args(argv)
    versions = tuple(v.strip() for v in args.versions.split(",") if v.strip())
    rows = table(args.batch, versions, args.fatbin)
    head = "| layer | pass | GEMM M x N x K | GFLOP |" + "".join(
        f" {v} kernel | tile | splits | fill | waves | FFMA | {v} bound |" for v in versions)
    print(head)
    print("|" + "---|" * (4 + 7 * len(versions)))
    for r in rows:
        line = f"| {r['layer']} | {r['pass']} | {r['gemm']} | {r['gflop']:.1f} |"
        for v in versions:
            m = r[v]
            if m is None:
                line += " - |" * 7
                continue
            line += (f" {m['kernel']} | {m['tile']} | {m['splits']} | {100 * m['fill']:.0f}% | "
                     f"{100 * m['waves']:.0f}% | {100 * m['ffma']:.1f}% | **{100 * m['bound']:.0f}%** |")
        print(line)
    for split in ("device", "column"):
        print(f"all passes, {split}: " + ", ".join(f"{v} {100 * totals(rows, v, split):.0f}% of peak"
                                                  for v in versions)
              + " (winograd: v4 where it does not apply; effective rate = direct FLOPs / time)")


if __name__ == "__main__":
    main()
