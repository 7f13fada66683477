"""Static bounds of the implicit-GEMM convolutions at AlexNet's shapes (no GPU needed).

    python benchmarks/conv_model.py [--batch 128] [--versions v3,v4]
    python benchmarks/conv_model.py --markdown      # the tables of benchmarks/notes-conv.md

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
predicted time (F(2x2, 3x3)'s GEMMs do 2.25x fewer multiplications, F(4x4, 3x3)'s
4x fewer, less the padding of the output to whole 2x2 or 4x4 tiles).

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

from convnet import tune  # noqa: E402

PEAK = tune.PEAK


def row(geo, pass_, version, ffma):
    """The model's figures (convnet.tune.predict) for version with the launcher's own row
    tile and split count, and its bound as a share of peak; None where it does not apply."""
    m = tune.predict(geo, pass_, tune.Candidate(version), ffma)
    if m is not None:
        m["bound"] = geo.flops / m["seconds"] / PEAK
    return m


def table(batch=128, versions=("v2", "v3", "v4", "winograd"), fatbin=conv_sass.FATBIN):
    ffma = {name: conv_sass.ffma_fraction(body) for name, body in conv_sass.main_loops(fatbin).items()}
    rows = []
    for layer in LAYERS:
        xs, ws, _ = layer.shapes(batch)
        geo = conv.Geometry.of("conv_model", xs, ws, layer.stride, layer.pad, layer.groups)
        for pass_ in layer.passes():
            entry = {"layer": layer.name, "pass": pass_, "gemm": "x".join(map(str, geo.gemm(pass_))),
                     "gflop": geo.flops / 1e9}
            for v in dict.fromkeys(versions + ("v4",)):       # v4: where winograd does not apply
                entry[v] = row(geo, pass_, v, ffma)
            rows.append(entry)
    return rows


def totals(rows, version, split):
    """All passes of one split together; a pass without this version counts with v4."""
    sel = [r for r in rows if (r["layer"].endswith("/col")) == (split == "column")]
    flops = sum(r["gflop"] for r in sel) * 1e9
    return flops / sum((r[version] or r["v4"])["seconds"] for r in sel) / PEAK


def markdown(batch=128, fatbin=conv_sass.FATBIN):
    """benchmarks/notes-conv.md's "Static figures 2" tables: per pass v3, v4 (the
    launcher's plan), both Winograd tiles (effective) and the tuner's model choice; then
    all passes together per split."""
    versions = ("v2", "v3", "v4", "winograd", "winograd4")
    ffma = {name: conv_sass.ffma_fraction(body) for name, body in conv_sass.main_loops(fatbin).items()}
    rows = table(batch, versions, fatbin)
    pct = lambda m, d=0: "-" if m is None else f"**{100 * m['bound']:.{d}f}%**"   # noqa: E731
    print("| layer | pass | GEMM M x N x K | GFLOP | v3 bound | v4 kernel (launcher's plan) | splits | fill | waves "
          "| FFMA | v4 bound | F(2x2) (effective) | F(4x4) (effective) | tuner (model) choice | its bound |")
    print("|" + "---|" * 15)
    best = {}
    for r in rows:
        layer = next(layer for layer in LAYERS if layer.name == r["layer"])
        xs, ws, _ = layer.shapes(batch)
        geo = conv.Geometry.of("conv_model", xs, ws, layer.stride, layer.pad, layer.groups)
        cand, t = tune.model_best(geo, r["pass"])     # tune.FFMA_SHARE, as the launchers use it
        best[(r["layer"], r["pass"])] = t
        v4 = r["v4"]
        print(f"| {r['layer']} | {r['pass']} | {r['gemm']} | {r['gflop']:.1f} | {pct(r['v3'])} | "
              f"{v4['kernel'].removeprefix('conv2d_')} | "
              f"{v4['splits']} | {100 * v4['fill']:.0f}% | {100 * v4['waves']:.0f}% | {100 * v4['ffma']:.1f}% | "
              f"{pct(v4)} | {pct(r['winograd'], 1)} | {pct(r['winograd4'], 1)} | {cand.label()} | "
              f"**{100 * geo.flops / t / PEAK:.1f}%** |")
    print()
    print("| | v2 (shipped) | v3 | v4 | v4 + F(2x2) | v4 + F(4x4) | tuner (model) |")
    print("|---|---|---|---|---|---|---|")
    for split, name in (("device", "one device (grouped)"), ("column", "one column")):
        sel = [r for r in rows if r["layer"].endswith("/col") == (split == "column")]
        tuned = sum(r["gflop"] for r in sel) * 1e9 / sum(best[(r["layer"], r["pass"])] for r in sel) / PEAK
        print(f"| {name} | " + " | ".join(f"{100 * totals(rows, v, split):.1f}%" for v in versions)
              + f" | **{100 * tuned:.1f}%** |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--versions", default="v2,v3,v4,winograd,winograd4")
    ap.add_argument("--fatbin", default=conv_sass.FATBIN)
    ap.add_argument("--markdown", action="store_true", help="print benchmarks/notes-conv.md's per-pass tables")
    args = ap.parse_args(argv)
    if args.markdown:
        markdown(args.batch, args.fatbin)
        return
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
