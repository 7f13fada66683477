"""The tensor-core launchers pick the kernels their cases say they exercise (so every
fast path and every general path of kernels/gemm_tc.cu and conv_tc.cu runs in the
value cases), and the 16-byte-load kernels' conditions: rows of a multiple of 4
floats, 16-byte aligned arrays, slices of a multiple of 4."""
import numpy as np
import pytest

from convnet import backend as devices
from convnet import checking, kernels
from convnet.kernel_ops import conv_tc, gemm_tc

CASES = gemm_tc.cases("small") + conv_tc.cases("small")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_runs_the_kernels_it_names(case, monkeypatch):
    used = []
    real = kernels.get_function

    def record(name, *a, **kw):
        used.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(kernels, "get_function", record)
    err, _ = checking.run_case(case, devices.emu())
    assert err <= case.tol
    assert set(case.kernels) == set(used), f"{case.name}: ran {sorted(set(used))}, names {sorted(case.kernels)}"


def test_fast_and_general_paths_are_both_covered():
    names = {k for c in CASES for k in c.kernels}
    for p in gemm_tc.PRECISIONS:
        for base in ("fc_tc_fwd", "fc_tc_bwd_data", "conv2d_tc_fwd"):
            for t in gemm_tc.BASE_TILES:
                assert f"{base}_{p}_{t}" in names
            for t in gemm_tc.VEC_TILES:
                assert f"{base}_vec_{p}_{t}" in names
        for base in ("conv2d_tc_bwd_data_s1", "conv2d_tc_bwd_filter"):
            for t in gemm_tc.CONV_BWD_TILES:
                assert f"{base}_{p}_{t}" in names


def test_vec_conditions():
    a = np.zeros((3, 8), np.float32)
    assert gemm_tc.vec_rows_ok(8, (a, 8))
    assert not gemm_tc.vec_rows_ok(6, (a, 8))          # K not a multiple of 4
    assert not gemm_tc.vec_rows_ok(8, (a, 6))          # rows not a multiple of 4
    m = gemm_tc._misaligned(a)
    assert m.flags.c_contiguous and gemm_tc.data_ptr(m) % 16 == 4
    assert not gemm_tc.vec_rows_ok(8, (m, 8))
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="vec=True"):
        gemm_tc.fc_forward(gemm_tc._misaligned(x), np.ones((3, 8), np.float32), vec=True)
    # the slices of a _vec launch are multiples of 4 deep
    for k in (36, 100, 9216, 1000):
        for splits in (1, 3, 7, None):
            _, sp, chunk = gemm_tc.choose(64, 64, k, "s", splits, align=4)
            assert chunk % 4 == 0 and (sp - 1) * chunk < k <= sp * chunk


def test_choose_prefers_the_big_tile_and_fills_waves():
    # fc6 forward at batch 128: 16 row tiles of 128, K = 9216 cut into 16 slices
    assert gemm_tc.choose(2048, 128, 9216) == ("l", 16, 576)
    # conv2 bwd_data (48 rows): the small tile pads 48 to 64, the big one to 128
    assert gemm_tc.choose(48, 93312, 3200, None, 1)[0] == "s"
    with pytest.raises(ValueError):
        gemm_tc.choose(8, 8, 8, tile="m")                  # only with tiles=VEC_TILES
    assert gemm_tc.choose(8, 8, 8, tile="m", tiles=gemm_tc.VEC_TILES)[0] == "m"
    # conv3 forward (192 filters): the 64x128 tile pads no rows and fills 4 blocks per SM
    assert gemm_tc.choose(192, 21632, 2304, None, 1, tiles=gemm_tc.VEC_TILES)[0] == "m"
    with pytest.raises(ValueError):
        gemm_tc.choose(8, 8, 8, splits=0)
    # the conv backward passes' 48-row warp tiles: 48 rows (conv2 bwd_data) on "t", 192 (conv4
    # bwd_data and bwd_filter) on "h", none padded; 128 rows stay on the big tile; 256 (conv3
    # bwd_data) take "h" too: 3 row tiles fill 96% of the waves with no split-K reduction
    assert gemm_tc.choose(48, 93312, 3200, tiles=gemm_tc.CONV_BWD_TILES)[0] == "t"
    assert gemm_tc.choose(192, 21632, 1728, tiles=gemm_tc.CONV_BWD_TILES)[0] == "h"
    assert gemm_tc.choose(192, 1728, 21632, tiles=gemm_tc.CONV_BWD_TILES)[0] == "h"
    assert gemm_tc.choose(128, 1728, 21632, tiles=gemm_tc.CONV_BWD_TILES)[0] == "l"
    assert gemm_tc.choose(256, 21632, 1728, tiles=gemm_tc.CONV_BWD_TILES) == ("h", 1, 1728)
    with pytest.raises(ValueError):
        gemm_tc.choose(8, 8, 8, tile="h")                  # only with tiles=CONV_BWD_TILES


def test_bwd_data_plan_routes():
    """conv2d_backward_data at unit stride runs on the forward's kernel where the cost model rates it
    faster (AlexNet's 192-row layers), on bwd_data_s1 where that pads fewer rows or fills the waves."""
    ok = conv_tc.bwd_data_fwd_ok(192, 3, 3, 1, 1, 1, 1)
    assert ok
    # conv4a / conv5a bwd_data (192 rows, 21632 columns): the forward's 64x128 tile, no split-K
    assert conv_tc.bwd_data_plan(192, 1, 21632, 1728, ok, True) == (True, "m", 1, 1728)
    assert conv_tc.bwd_data_plan(192, 1, 21632, 1152, ok, True) == (True, "m", 1, 1152)
    assert conv_tc.bwd_data_plan(192, 1, 21632, 1728, ok, True, via_forward=False)[:2] == (False, "h")
    assert conv_tc.bwd_data_plan(192, 1, 21632, 1728, False, True)[0] is False
    # conv2a (48 rows): bwd_data_s1's 48-row tile pads none; conv3a (256 rows): "h" fills 96% of the
    # waves where the forward's 128-row tile fills 64%
    assert conv_tc.bwd_data_plan(48, 1, 93312, 3200, True, True)[:2] == (False, "t")
    assert conv_tc.bwd_data_plan(256, 1, 21632, 1728, True, True)[:2] == (False, "h")
    # the conditions: unit stride, pads <= KH-1 and KW-1, Fg*KH*KW a multiple of 4, <= 32 taps
    assert not conv_tc.bwd_data_fwd_ok(192, 3, 3, 2, 1, 1, 1)
    assert not conv_tc.bwd_data_fwd_ok(192, 3, 3, 1, 1, 3, 1)
    assert not conv_tc.bwd_data_fwd_ok(192, 3, 3, 1, 1, 1, 3)
    assert not conv_tc.bwd_data_fwd_ok(5, 3, 3, 1, 1, 1, 1)      # rows of 45 floats
    assert not conv_tc.bwd_data_fwd_ok(4, 7, 5, 1, 1, 1, 1)      # 35 taps
    for kw in (dict(via_forward=True, tile="h"), dict(via_forward=True, splits=2)):
        with pytest.raises(ValueError):
            conv_tc.bwd_data_plan(192, 1, 21632, 1728, ok, True, **kw)
    with pytest.raises(ValueError, match="via_forward=True"):
        conv_tc.bwd_data_plan(192, 1, 21632, 1728, False, True, via_forward=True)
    dy, w = np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="via_forward=True"):       # stride 2
        conv_tc.conv2d_backward_data(dy, w, (1, 2, 6, 6), stride=2, pad=1, via_forward=True)
