"""The convolution kernels (kernels/conv.cu) against the NumPy reference.

Every kernel version runs on the CPU emulation on odd shapes (and on the GPU
under the gpu marker, with the AlexNet shapes too); randomized geometries;
float32 adjoint identities (the backward kernels are the exact transposes of
the forward); groups = 2 against two separate convolutions; split-K
determinism; bad input.
"""
import re
from pathlib import Path

import numpy as np
import pytest

from convnet import backend as devices
from convnet import checking
from convnet import reference as R
from convnet.kernel_ops import conv

SMALL = conv.cases("small")
VERSIONS = conv.VERSIONS
# versions built for forward, backward-data and backward-filter alike
ALL_PASS_VERSIONS = list(VERSIONS)


def _check(case, backend):
    err, errs = checking.run_case(case, backend)
    print(f"{case.name}: relative error {err:.2e} (tol {case.tol:.0e})")
    assert err <= case.tol, f"{case.name} on {backend}: relative error {err:.2e} > {case.tol:.0e}"


# Every small case runs on the emulation and the GPU in tests/test_kernels.py
# (the table over all families); this file adds what a table cannot say.


@pytest.mark.gpu
@pytest.mark.parametrize("shape", conv.ALEXNET_SHAPES, ids=[s[0] for s in conv.ALEXNET_SHAPES])
def test_alexnet_shape_gpu(shape):
    # the data is made here, not at collection: AlexNet-sized float64 arrays are large
    label, xs, ws, s, p, g = shape
    for case in conv.shape_cases(label, xs, ws, s, p, g, scale="alexnet"):
        _check(case, devices.cuda(0))


def test_every_kernel_is_checked():
    """Each extern "C" kernel in conv.cu is exercised by some small case."""
    src = (Path(__file__).resolve().parents[1] / "kernels" / "conv.cu").read_text()
    names = set(re.findall(r'extern "C" __global__ void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(', src))
    covered = {k for c in SMALL for k in c.kernels}
    assert names and names <= covered, f"kernels without a check: {sorted(names - covered)}"
    assert set(conv.SHIPPED.values()) <= set(VERSIONS)


@pytest.mark.parametrize("version, row_tiles", [("v3", conv.V3_ROWS), ("v4", conv.V4_ROWS)])
def test_every_small_shape_has_v3_v4_cases(version, row_tiles):
    """v3 and v4 run on every small shape (odd, partial tiles) for each pass, with each
    row tile, plus a full tile."""
    names = {c.name for c in SMALL}
    passes = {"conv2d_forward": "fwd", "conv2d_backward_data": "bwd_data",
              "conv2d_backward_filter": "bwd_filter"}
    assert set(passes) == set(conv.V3_PASSES)
    for label, *_ in conv.SMALL_SHAPES + (conv.V3_SHAPES if version == "v3" else conv.V4_SHAPES[1:]):
        for rows in row_tiles:
            assert f"conv2d_fwd_{version} rows={rows} relu {label}" in names
            for op in conv.V3_PASSES:
                assert f"conv2d_{passes[op]}_{version} rows={rows} {label}" in names


def test_v4_runs_where_it_applies_and_v3_elsewhere():
    """v4_plan: the tap mask up to 32 taps, no mask without padding, bwd_data at stride 1
    only; where v4 does not apply, version="v4" gives v3's result bit for bit."""
    small = conv.Geometry.of("t", (2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1)
    assert conv.v4_plan(small, "fwd").masked == 1
    big = conv.Geometry.of("t", (2, 3, 14, 13), (5, 3, 7, 6), 2, 0, 1)       # 42 taps, pad 0
    assert conv.v4_plan(big, "fwd").masked == 0 and conv.v4_plan(big, "bwd_filter").masked == 0
    assert conv.v4_plan(big, "bwd_data") is None                              # stride 2
    padded = conv.Geometry.of("t", (2, 3, 14, 13), (5, 3, 7, 6), 1, 1, 1)    # 42 taps, padded
    assert all(conv.v4_plan(padded, p) is None for p in ("fwd", "bwd_data", "bwd_filter"))
    x, w, b, dy = _data((2, 3, 14, 13), (5, 3, 7, 6), 1, 1, seed=21)
    np.testing.assert_array_equal(conv.conv2d_forward(x, w, b, 1, 1, version="v4"),
                                  conv.conv2d_forward(x, w, b, 1, 1, version="v3"))
    x, w, b, dy = _data((2, 3, 14, 13), (5, 3, 7, 6), 2, 0, seed=22)
    np.testing.assert_array_equal(conv.conv2d_backward_data(dy, w, x.shape, 2, 0, version="v4"),
                                  conv.conv2d_backward_data(dy, w, x.shape, 2, 0, version="v3"))


def test_v4_48_row_tile_is_chosen_for_48_rows():
    """M = 48 (conv2's bwd_data, Cg = 48; conv1 per column, F = 48) pads least on the
    48-row tile (6 x 8 fragments, 128 threads); its kernels exist and each is checked."""
    assert conv._v4_rows(48) == 48 and conv._v4_rows(96) == 96 and conv._v4_rows(64) == 64
    assert conv._tile("v4", 48)[2] == conv.V4_THREADS[48] == 128
    assert conv._v4_brows(48) == conv._v4_brows(64) == 16
    conv2 = conv.Geometry.of("t", *conv.ALEXNET_SHAPES[1][1:])
    assert conv.v4_plan(conv2, "bwd_data").rows == 48
    conv1_col = conv.Geometry.of("t", (128, 3, 227, 227), (48, 3, 11, 11), 4, 0, 1)
    assert conv.v4_plan(conv1_col, "fwd").rows == 48
    names = {c.name for c in SMALL}
    for label, *_ in conv.V4_SHAPES[3:]:
        assert f"conv2d_bwd_filter_v4 rows=48 {label}" in names
    covered = {k for c in SMALL for k in c.kernels}
    assert {f"conv2d_{p}_v4_m48" for p in ("fwd", "bwd_data", "bwd_filter")} | {"conv2d_wino_gemm_m48"} <= covered


def test_v4_table_against_direct_decoding():
    """The launcher's (off, bits) table decoded back for every row: fwd in the tap-major
    order with padded channel runs, and bwd_filter's per-row pixels and tap masks (the
    last tile of an image overlaps the one before, its repeated rows masked off)."""
    geo = conv.Geometry.of("t", (2, 6, 7, 6), (6, 3, 3, 2), (2, 1), (1, 0), 2)
    plan = conv.v4_plan(geo, "fwd", rows=128)
    run = plan.run
    assert run == 8 and plan.kp == 48                                         # 6 taps x 8 (3 live)
    off, bits = conv._v4_table_np(geo, "fwd", plan.masked, run, plan.kp)
    assert len(off) == plan.kp + conv.V4_SPARE and not bits[geo.taps * run:].any()
    for k in range(geo.taps * run):
        tap, c = divmod(k, run)
        i, j = divmod(tap, geo.kw)
        c = c if c < geo.cg else 0                                            # padding rows read c = 0
        assert off[k] == c * geo.h * geo.w + i * geo.w + j and bits[k] == 1 << tap
    off, bits = conv._v4_table_np(geo, "bwd_filter", 1, 8, 0)
    pixels = geo.oh * geo.ow
    assert pixels % 16 and pixels > 16 and len(off) == -(-pixels // 16) * 16
    seen = []
    for v in range(len(off)):
        # tile t covers pixels min(16 t, OH*OW - 16) ..; rows the tile before covered: bits 0
        p = min(v // 16 * 16, pixels - 16) + v % 16
        oh, ow = divmod(p, geo.ow)
        if p < v // 16 * 16:
            assert off[v] == 0 and bits[v] == 0
            continue
        seen.append(p)
        assert off[v] == oh * geo.sh * geo.w + ow * geo.sw
        for tap in range(geo.taps):
            i, j = divmod(tap, geo.kw)
            ih, iw = oh * geo.sh - geo.ph + i, ow * geo.sw - geo.pw + j
            assert bool(bits[v] >> tap & 1) == (0 <= ih < geo.h and 0 <= iw < geo.w)
    assert seen == list(range(pixels))                                         # each pixel once
    # fewer than 16 pixels: no v4 (its last tile would start before the image); v3 runs
    small = conv.Geometry.of("t", (2, 3, 15, 13), (48, 3, 7, 6), (2, 3), 0, 1)
    assert small.oh * small.ow == 15 and conv.v4_plan(small, "bwd_filter") is None


@pytest.mark.parametrize("version", conv.VERSIONS)
def test_fused_relu_equals_unfused(version):
    xs, ws, s, p, g = (3, 6, 11, 9), (10, 3, 4, 3), (2, 1), (1, 2), 2
    x, w, b, _ = _data(xs, ws, s, p, seed=11)
    plain = conv.conv2d_forward(x, w, b, s, p, g, version=version)
    fused = conv.conv2d_forward(x, w, b, s, p, g, version=version, relu=True)
    assert (plain < 0).any() and (plain > 0).any()          # the relu has something to do
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))
    nobias = conv.conv2d_forward(x, w, None, s, p, g, version=version, relu=True)
    np.testing.assert_array_equal(nobias, np.maximum(conv.conv2d_forward(x, w, None, s, p, g, version=version), 0))
    with pytest.raises(TypeError, match="relu"):
        conv.conv2d_forward(x, w, b, s, p, g, version="v3", relu=1)


def _random_geometry(rng):
    g = int(rng.integers(1, 4))
    n, cg, fg = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 6))
    h, w = int(rng.integers(3, 15)), int(rng.integers(3, 15))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    kh, kw = int(rng.integers(1, min(6, h + 2 * ph) + 1)), int(rng.integers(1, min(6, w + 2 * pw) + 1))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    return (n, cg * g, h, w), (fg * g, cg, kh, kw), (sh, sw), (ph, pw), g


@pytest.mark.parametrize("draw", range(4))
def test_random_geometry_emu(draw):
    rng = np.random.default_rng(1000 + draw)
    xs, ws, s, p, g = _random_geometry(rng)
    label = f"random x{xs} w{ws} s{s} p{p} g{g}"
    for case in conv.shape_cases(label, xs, ws, s, p, g, seed=draw):
        _check(case, devices.emu())


def _data(x_shape, w_shape, stride, pad, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    dy = rng.standard_normal(conv._out_shape(x_shape, w_shape, stride, pad)).astype(np.float32)
    return x, w, b, dy


@pytest.mark.parametrize("version", ALL_PASS_VERSIONS)
def test_adjoint_identities(version):
    """<conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_filter(dy, x)>, <b, bwd_bias(dy)> = <b (broadcast), dy>."""
    xs, ws, s, p, g = (3, 6, 11, 9), (4, 3, 4, 3), (2, 1), (1, 2), 2
    x, w, b, dy = _data(xs, ws, s, p, seed=7)
    y = conv.conv2d_forward(x, w, None, s, p, g, version=version).astype(np.float64)
    dx = conv.conv2d_backward_data(dy, w, xs, s, p, g, version=version).astype(np.float64)
    dw = conv.conv2d_backward_filter(dy, x, ws, s, p, g, version=version).astype(np.float64)
    db = conv.conv2d_backward_bias(dy, version=version).astype(np.float64)
    d = dy.astype(np.float64)
    lhs = float(np.sum(y * d))
    scale = float(np.sum(np.abs(y * d)))
    assert abs(lhs - float(np.sum(x * dx))) <= 1e-5 * scale
    assert abs(lhs - float(np.sum(w * dw))) <= 1e-5 * scale
    yb = conv.conv2d_forward(x, w, b, s, p, g, version=version).astype(np.float64)
    assert abs(float(np.sum((yb - y) * d)) - float(np.sum(b * db))) <= 1e-5 * float(np.sum(np.abs(yb - y) * np.abs(d)))


@pytest.mark.parametrize("version", ALL_PASS_VERSIONS)
def test_groups_equal_separate_convolutions(version):
    xs, ws, s, p = (3, 6, 10, 9), (8, 3, 3, 2), 2, 1
    x, w, b, dy = _data(xs, ws, s, p, seed=3)
    kw = dict(stride=s, pad=p, version=version)
    y = conv.conv2d_forward(x, w, b, groups=2, **kw)
    dx = conv.conv2d_backward_data(dy, w, xs, groups=2, **kw)
    dw = conv.conv2d_backward_filter(dy, x, ws, groups=2, **kw)
    for gi in range(2):
        xg, wg, bg, dyg = x[:, 3 * gi:3 * gi + 3], w[4 * gi:4 * gi + 4], b[4 * gi:4 * gi + 4], dy[:, 4 * gi:4 * gi + 4]
        np.testing.assert_allclose(y[:, 4 * gi:4 * gi + 4], conv.conv2d_forward(xg, wg, bg, **kw), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx[:, 3 * gi:3 * gi + 3],
                                   conv.conv2d_backward_data(dyg, wg, xg.shape, **kw), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dw[4 * gi:4 * gi + 4],
                                   conv.conv2d_backward_filter(dyg, np.ascontiguousarray(xg), wg.shape, **kw),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
def test_backward_filter_split_k_is_deterministic(version):
    xs, ws, s, p, g = (3, 4, 9, 10), (6, 2, 3, 2), 1, 1, 2
    x, w, b, dy = _data(xs, ws, s, p, seed=5)
    one = conv.backward_filter(dy, x, ws, s, p, g, version=version, splits=1)
    a = conv.backward_filter(dy, x, ws, s, p, g, version=version, splits=5)
    again = conv.backward_filter(dy, x, ws, s, p, g, version=version, splits=5)
    assert np.array_equal(a, again)
    np.testing.assert_allclose(a, one, rtol=1e-5, atol=1e-5)
    splits, chunk = conv._slices(3 * 9 * 10, 5)
    assert splits == 5 and chunk % 8 == 0 and (splits - 1) * chunk < 3 * 9 * 10 <= splits * chunk


@pytest.mark.parametrize("version, rows", [("v2", None), ("v3", None), ("v3", 64), ("v3", 128)])
def test_split_heuristic_on_alexnet_shapes(version, rows):
    for label, xs, ws, s, p, g in conv.ALEXNET_SHAPES:
        geo = conv.Geometry.of("t", xs, ws, s, p, g)
        splits, chunk = conv.backward_filter_splits(geo, version, rows)
        k_total = geo.n * geo.oh * geo.ow
        assert 1 <= splits <= conv.MAX_SPLITS and (splits - 1) * chunk < k_total <= splits * chunk, label


def test_split_counts_fill_whole_waves():
    """The split count minimises predicted time (conv.wave_seconds: whole waves, a last
    partial wave with fewer blocks per SM, + workspace traffic): v3 bwd_filter on AlexNet
    keeps every SM busy to at least 90% in its last wave (it ran 1.02-1.27 waves of 2
    blocks per SM with a fixed block target), and a launch far above a wave is not split."""
    sms = conv.DEFAULT_SMS
    for label, xs, ws, s, p, g in conv.ALEXNET_SHAPES:
        geo = conv.Geometry.of("t", xs, ws, s, p, g)
        m, ncol, _ = geo.gemm("bwd_filter")
        tm = conv._tile("v3", m)[0]
        blocks = g * -(-m // tm) * -(-ncol // 128)
        splits, _ = conv.backward_filter_splits(geo, "v3")
        rest = blocks * splits % (2 * sms)
        if rest:
            assert rest / (-(-rest // sms) * sms) >= 0.9, (label, splits, blocks * splits)
    assert conv._best_splits(3000, 100, 132, 2, 1e-6, 1e8, 1, 64) == 1
    assert conv._best_splits(20, 1000, 132, 2, 1e-6, 1e5, 1, 64) == 13      # 260 blocks: one wave
    # a partial wave: its SMs hold fewer blocks, so each runs faster
    assert conv.wave_seconds(264 + 132, 10, 132, 2, 1.0) == 10 * (2 + 1)
    geo = conv.Geometry.of("t", *conv.ALEXNET_SHAPES[1][1:])                  # conv2: 5.5 waves unsplit
    assert conv.v4_plan(geo, "fwd").splits == 1


def test_non_contiguous_inputs_are_copied():
    xs, ws, s, p = (2, 3, 8, 14), (4, 3, 3, 3), 1, 1
    x, w, b, _ = _data(xs, ws, s, p, seed=9)
    xv = x[:, :, :, ::2]                       # (2, 3, 8, 7), not contiguous
    got = conv.conv2d_forward(xv, w, b, s, p)
    np.testing.assert_allclose(got, R.conv2d_forward(xv.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p),
                               rtol=1e-5, atol=1e-5)


def test_bad_input_errors():
    xs, ws = (2, 4, 7, 7), (6, 2, 3, 3)
    x, w, b, dy = _data(xs, ws, 1, 0)
    with pytest.raises(TypeError, match="float32"):
        conv.conv2d_forward(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="4 dimensions"):
        conv.conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match="per group"):
        conv.conv2d_forward(x, w)                      # groups=1 needs 4 channels per filter
    with pytest.raises(ValueError, match="not divisible by groups"):
        conv.conv2d_forward(x, w, groups=3)
    with pytest.raises(ValueError, match="bias"):
        conv.conv2d_forward(x, w, b[:5], groups=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv.conv2d_forward(x[:, :, :2], w, groups=2)
    with pytest.raises(ValueError, match="stride"):
        conv.conv2d_forward(x, w, stride=0, groups=2)
    with pytest.raises(ValueError, match="pad"):
        conv.conv2d_forward(x, w, pad=(1, -1), groups=2)
    with pytest.raises(TypeError, match="stride"):
        conv.conv2d_forward(x, w, stride=1.5, groups=2)
    with pytest.raises(ValueError, match="unknown version"):
        conv.conv2d_forward(x, w, groups=2, version="v9")
    with pytest.raises(ValueError, match="dy has shape"):
        conv.conv2d_backward_data(dy[:, :, 1:], w, xs, groups=2)
    with pytest.raises(ValueError, match="dy has shape"):
        conv.conv2d_backward_filter(dy, x, ws, pad=1, groups=2)
    with pytest.raises(ValueError, match="x_shape"):
        conv.conv2d_backward_data(dy, w, xs[:3], groups=2)
    with pytest.raises(TypeError, match="NumPy or CuPy array"):
        conv.conv2d_backward_bias([1.0, 2.0])
    with pytest.raises(ValueError, match="splits"):
        conv.backward_filter(dy, x, ws, groups=2, splits=0)
    with pytest.raises(ValueError, match="splits is a v4 setting"):
        conv.conv2d_forward(x, w, groups=2, version="v3", splits=2)
    with pytest.raises(ValueError, match="tile_rows must be one of"):
        conv.conv2d_forward(x, w, groups=2, version="v3", tile_rows=96)
    with pytest.raises(TypeError, match="conv2d_forward: stride"):            # the op names itself
        conv.conv2d_forward(x, w, stride="1", groups=2)


@pytest.mark.parametrize("version", ALL_PASS_VERSIONS)
def test_empty_batch(version):
    x = np.zeros((0, 3, 5, 6), np.float32)
    w = np.ones((2, 3, 3, 3), np.float32)
    dy = np.zeros((0, 2, 3, 4), np.float32)
    assert conv.conv2d_forward(x, w, version=version).shape == (0, 2, 3, 4)
    assert conv.conv2d_backward_data(dy, w, x.shape, version=version).shape == x.shape
    dw = conv.conv2d_backward_filter(dy, x, w.shape, version=version)
    assert dw.shape == w.shape and not dw.any()
    db = conv.conv2d_backward_bias(dy, version=version)
    assert db.shape == (2,) and not db.any()


WINO_MATRICES = {2: (conv.WINO_BT, conv.WINO_G, conv.WINO_AT), 4: (conv.WINO4_BT, conv.WINO4_G, conv.WINO4_AT)}


def _winograd_float64(x, w, pad, tile=2):
    """F(tile x tile, 3x3) in float64 with conv.WINO_* or conv.WINO4_* (one group): the
    algorithm alone, no kernel."""
    n, c, h, wd = x.shape
    ph, pw = pad
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = -(-oh // tile), -(-ow // tile)
    xp = np.zeros((n, c, tile * th + 2, tile * tw + 2))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    d = np.stack([np.stack([xp[:, :, tile * a:tile * a + tile + 2, tile * b:tile * b + tile + 2]
                            for b in range(tw)], 2) for a in range(th)], 2)   # (n, c, th, tw, t+2, t+2)
    bt, g, at = WINO_MATRICES[tile]
    v = np.einsum("ij,nctujk,lk->nctuil", bt, d, bt)
    u = np.einsum("ij,fcjk,lk->fcil", g, w, g)
    m = np.einsum("fcil,nctuil->nftuil", u, v)
    y = np.einsum("ij,nftujk,lk->nftuil", at, m, at)                          # (n, f, th, tw, t, t)
    return y.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], tile * th, tile * tw)[:, :, :oh, :ow]


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_transforms_are_exact_in_float64(tile):
    """F(2x2, 3x3)'s and F(4x4, 3x3)'s B, G, A give the direct convolution to rounding in
    float64 (the algorithm has no approximation; its float32 error is rounding in the
    transforms). Output sizes 7x6 and 9x8: partial tiles of both sizes."""
    rng = np.random.default_rng(31)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    for pad in ((1, 1), (0, 2)):
        ref = R.conv2d_forward(x, w, None, 1, pad)
        got = _winograd_float64(x, w, pad, tile)
        assert np.max(np.abs(got - ref)) <= 1e-12 * np.max(np.abs(ref))


def test_winograd4_matrices_are_lavin_grays():
    """conv.WINO4_* at the points 0, +-1, +-2, infinity are Lavin and Gray's F(4x4, 3x3)
    (the matrices conv.cu's wino4_bt and wino4_at hard-code as a = 2)."""
    bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
          [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
    g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
    at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    assert conv.WINO4_POINT == 2
    np.testing.assert_array_equal(conv.WINO4_BT, bt)
    np.testing.assert_allclose(conv.WINO4_G, g, rtol=1e-15)
    np.testing.assert_array_equal(conv.WINO4_AT, at)


@pytest.mark.parametrize("pass_", ["fwd", "bwd_data"])
def test_winograd_float32_error_is_near_direct(pass_):
    """The float32 Winograd kernels against the float64 reference: within 3x the error of
    the direct v4 kernel on the same data (and under 1e-5 normwise), channels enough
    for the sums to matter (C = 64: K = 576)."""
    xs, ws, s, p, g = (2, 64, 9, 7), (16, 64, 3, 3), 1, 1, 1
    rng = np.random.default_rng(32)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) / 24).astype(np.float32)
    dy = rng.standard_normal(conv._out_shape(xs, ws, s, p)).astype(np.float32)
    geo = dict(stride=s, pad=p, groups=g)
    if pass_ == "fwd":
        ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, **geo)
        run = lambda v: conv.conv2d_forward(x, w, None, **geo, version=v)        # noqa: E731
    else:
        ref = R.conv2d_backward_data(dy.astype(np.float64), w.astype(np.float64), xs, **geo)
        run = lambda v: conv.conv2d_backward_data(dy, w, xs, **geo, version=v)   # noqa: E731
    err = {v: checking.relative_error(run(v), ref) for v in ("winograd", "v4")}
    print(f"{pass_}: normwise relative error winograd {err['winograd']:.2e}, direct v4 {err['v4']:.2e}")
    assert err["winograd"] <= max(3 * err["v4"], 1e-7) and err["winograd"] < 1e-5


# F(4x4, 3x3)'s float32 error, measured on these cases (normwise, against float64): forward
# 4.5e-6 / 5.0e-6 against direct v4's 2.9e-7 / 4.1e-7, backward-data 2.5e-6 / 4.3e-6
# against 5.9e-7 / 3.3e-7: 4x-16x the direct kernel's. Its B^T entries up to 5 and A^T's
# up to 8 grow the rounding of V and M; the test holds it to 20x and under 1e-5.
WINO4_ERROR_SHAPES = [((2, 64, 9, 7), (16, 64, 3, 3), 1), ((2, 64, 13, 13), (16, 32, 3, 3), 2)]


@pytest.mark.parametrize("pass_", ["fwd", "bwd_data"])
@pytest.mark.parametrize("shape", WINO4_ERROR_SHAPES, ids=["9x7 C64", "13x13 C64 g2"])
def test_winograd4_float32_error_is_bounded(pass_, shape):
    """The float32 F(4x4, 3x3) kernels against the float64 reference: within 20x the
    error of the direct v4 kernel on the same data and under 1e-5 normwise; an odd
    9x7 image (partial 4x4 tiles) and AlexNet's 13x13 with groups, K = 576 and 288."""
    xs, ws, g = shape
    s, p = 1, 1
    rng = np.random.default_rng(32)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) / 24).astype(np.float32)
    dy = rng.standard_normal(conv._out_shape(xs, ws, s, p)).astype(np.float32)
    geo = dict(stride=s, pad=p, groups=g)
    if pass_ == "fwd":
        ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, **geo)
        run = lambda v: conv.conv2d_forward(x, w, None, **geo, version=v)        # noqa: E731
    else:
        ref = R.conv2d_backward_data(dy.astype(np.float64), w.astype(np.float64), xs, **geo)
        run = lambda v: conv.conv2d_backward_data(dy, w, xs, **geo, version=v)   # noqa: E731
    err = {v: checking.relative_error(run(v), ref) for v in ("winograd4", "v4")}
    print(f"{pass_}: normwise relative error winograd4 {err['winograd4']:.2e}, direct v4 {err['v4']:.2e}")
    assert err["winograd4"] <= 20 * err["v4"] and err["winograd4"] < 1e-5


def test_winograd4_pads_alexnets_13x13_to_16x16():
    """F(4x4, 3x3) on conv4: 4 x 4 tiles per image (16 x 16 outputs computed for 13 x 13), so
    the GEMMs do 4 x 169/256 = 2.64x fewer FLOPs than the direct convolution."""
    geo = conv.Geometry.of("t", *conv.ALEXNET_SHAPES[3][1:])
    assert conv.winograd_tiles(geo, 4) == (4, 4, 128 * 16)
    from convnet import tune
    saving = tune.predict(geo, "fwd", tune.Candidate("winograd4"))["saving"]
    assert abs(saving - 4 * 169 / 256) < 1e-12


def test_winograd_applies_to_3x3_stride_1_only():
    geo = conv.Geometry.of("t", (2, 4, 9, 9), (4, 4, 3, 3), 1, 1, 1)
    assert conv.winograd_applies(geo, "fwd") and conv.winograd_applies(geo, "bwd_data")
    assert not conv.winograd_applies(geo, "bwd_filter")
    assert not conv.winograd_applies(conv.Geometry.of("t", (2, 4, 9, 9), (4, 4, 3, 3), 2, 1, 1), "fwd")
    assert not conv.winograd_applies(conv.Geometry.of("t", (2, 4, 9, 9), (4, 4, 5, 5), 1, 2, 1), "fwd")
    x, w, b, dy = _data((2, 4, 9, 9), (4, 4, 5, 5), 1, 2, seed=33)            # 5x5: runs v4
    for v in conv.WINO_VERSIONS:
        np.testing.assert_array_equal(conv.conv2d_forward(x, w, b, 1, 2, version=v),
                                      conv.conv2d_forward(x, w, b, 1, 2, version="v4"))


def test_v4_weights_are_tiled_by_rows():
    """_v4_weights stores at[g, k, m] (the plan's K order, zero-padded) as (G, Mp / rows, kp,
    rows) with V4_SPARE * Mp zeros after it: implicit_gemm_v4 reads each row tile's K rows
    `rows` floats apart (immediate offsets in its unrolled loop)."""
    rng = np.random.default_rng(5)
    for xs, ws, s, p, g in [((2, 6, 9, 8), (10, 3, 3, 3), 1, 1, 2), ((2, 3, 14, 13), (5, 3, 7, 6), 2, 0, 1),
                            ((2, 4, 6, 5), (260, 2, 2, 2), 1, 1, 2)]:
        geo = conv.Geometry.of("t", xs, ws, s, p, g)
        w = rng.standard_normal(ws).astype(np.float32)
        gg, fg, cg, taps = geo.groups, geo.fg, geo.cg, geo.taps
        w4 = w.reshape(gg, fg, cg, taps)
        for pass_ in ("fwd", "bwd_data"):
            for rows in conv.V4_ROWS:
                plan = conv.v4_plan(geo, pass_, rows)
                if plan is None:
                    continue
                m = geo.gemm(pass_)[0]
                mp = -(-m // rows) * rows
                at = np.zeros((gg, plan.kp, mp), np.float32)
                if pass_ == "fwd" and not plan.masked:
                    at[:, :cg * taps, :fg] = w4.reshape(gg, fg, cg * taps).transpose(0, 2, 1)
                else:
                    src = w4.transpose(0, 3, 2, 1) if pass_ == "fwd" else w4.transpose(0, 3, 1, 2)
                    at[:, :taps * plan.run].reshape(gg, taps, plan.run, mp)[:, :, :src.shape[2], :m] = src
                ref = at.reshape(gg, plan.kp, mp // rows, rows).transpose(0, 2, 1, 3).ravel()
                flat = conv._v4_weights(np, w, geo, pass_, plan)
                assert flat.size == ref.size + conv.V4_SPARE * mp and not flat[ref.size:].any()
                np.testing.assert_array_equal(flat[:ref.size], ref)


def test_v4_slices_of_every_length_mod_3():
    """fwd and bwd_data v4 run their main loop in rounds of 3 K steps with no exit test,
    then the 0, 1 or 2 steps left outside the loop (conv.cu, implicit_gemm_v4): slices of
    every length mod 3, on every row tile, against the float64 reference."""
    from convnet import checking
    rng = np.random.default_rng(7)
    x_shape, w_shape, geo = (2, 20, 7, 6), (8, 20, 3, 3), dict(stride=1, pad=1, groups=1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) / 3
    dy = rng.standard_normal((2, 8, 7, 6))
    g = conv.Geometry.of("t", x_shape, w_shape, 1, 1, 1)
    seen = set()
    for rows in conv.V4_ROWS:
        for sp in (1, 2, 5):
            for pass_ in ("fwd", "bwd_data"):
                plan = conv.v4_plan(g, pass_, rows, sp)
                lengths = {min(plan.tps, plan.k_tiles - s * plan.tps) for s in range(plan.splits)}
                seen |= {n % 3 for n in lengths}
                if pass_ == "fwd":
                    case = checking.Case(f"fwd rows={rows} splits={sp}", [x, w],
                                         lambda x, w: R.conv2d_forward(x, w, None, **geo),
                                         lambda x, w, rows=rows, sp=sp: conv.conv2d_forward(
                                             x, w, None, **geo, version="v4", tile_rows=rows, splits=sp),
                                         1e-5, ())
                else:
                    case = checking.Case(f"bwd_data rows={rows} splits={sp}", [dy, w],
                                         lambda dy, w: R.conv2d_backward_data(dy, w, x_shape, **geo),
                                         lambda dy, w, rows=rows, sp=sp: conv.conv2d_backward_data(
                                             dy, w, x_shape, **geo, version="v4", tile_rows=rows, splits=sp),
                                         1e-5, ())
                _check(case, devices.emu())
    assert seen == {0, 1, 2}
