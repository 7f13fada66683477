"""benchmarks/tc_sass.py: the main-loop counts of the tensor-core static model on canned
SASS (ldmatrix matrices, cp.async and shared-store widths), occupancy, and the launch
choices it mirrors."""
import math

from benchmarks import tc_sass as T

# a loop 0x10..0x70 (backward branch) holding one HMMA, and a forward branch outside
CODE = [(0x00, "MOV R1, R2"),
        (0x10, "LDSM.16.M88.4 R4, [R2]"),
        (0x20, "LDSM.16.MT88.2 R8, [R2+0x100]"),
        (0x30, "LDGSTS.E.BYPASS.LTC128B.128 [R3], desc[UR4][R4.64], !P1"),
        (0x40, "@P2 LDGSTS.E [R3+0x10], desc[UR4][R6.64]"),
        (0x50, "STS.128 [R1], R4"),
        (0x58, "STS.64 [R1+0x10], R4"),
        (0x60, "HMMA.1688.F32.TF32 R8, R4, R6, R8"),
        (0x70, "@P0 BRA 0x10"),
        (0x80, "@P1 BRA 0xa0"),
        (0x90, "EXIT")]


def test_loop_counts_matrices_and_widths():
    assert T.main_loop(CODE) == (0x10, 0x70)
    st = T.loop_stats(CODE)
    assert st["instructions"] == 8 and st["hmma"] == 1 and st["ldsm"] == 2 and st["ldgsts"] == 2 and st["sts"] == 2
    # LDSM x4 = 4 matrices of 128 B, x2 = 2; LDGSTS 16 B and 4 B per lane; STS 16 B and 8 B per lane
    assert st["smem_bytes"] == 4 * 128 + 2 * 128 + 32 * 16 + 32 * 4 + 32 * 16 + 32 * 8
    assert math.isclose(st["loop_bound"], 1 / (st["smem_bytes"] / 128))


def test_blocks_per_sm():
    assert T.blocks_per_sm(255, 128, 41984) == 2      # the 128x128 tile: registers allow 2
    assert T.blocks_per_sm(255, 64, 30720) == 4       # the 64x128 tile
    assert T.blocks_per_sm(32, 128, 0) == 16          # 2048 threads


def test_launch_choice_mirrors_the_launchers():
    from convnet.kernel_ops.gemm_tc import VEC_TILES, choose
    assert T.launch_choice("conv2d_tc_fwd_vec", 192, 21632, 2304, 1) == ("conv2d_tc_fwd_vec",) + choose(
        192, 21632, 2304, None, 1, tiles=VEC_TILES)
    assert T.launch_choice("fc_tc_fwd_vec", 2048, 128, 9216, 1) == ("fc_tc_fwd_vec",) + choose(
        2048, 128, 9216, None, None, align=4, tiles=VEC_TILES)
    assert T.launch_choice("conv2d_tc_bwd_filter", 128, 1200, 93312, 1)[2] > 1    # split-K
    # the backward passes with gathered operands have the 48-row warp tiles too
    assert T.launch_choice("conv2d_tc_bwd_data_s1", 48, 93312, 3200, 1, True)[:2] == ("conv2d_tc_bwd_data_s1", "t")
    assert T.launch_choice("conv2d_tc_bwd_filter", 192, 1728, 21632, 1)[1] == "h"
    assert T.launch_choice("conv2d_tc_bwd_data", 48, 93312, 3200, 1)[1] in ("l", "s")   # strided: no "t"
    # conv4a / conv5a bwd_data (192 rows) run on the forward's 64x128 tile; not without fwd_ok
    assert T.launch_choice("conv2d_tc_bwd_data_s1", 192, 21632, 1728, 1, True) == ("conv2d_tc_fwd_vec", "m", 1, 1728)
    assert T.launch_choice("conv2d_tc_bwd_data_s1", 192, 21632, 1728, 1)[0] == "conv2d_tc_bwd_data_s1"


def test_layer_gemms_route_bwd_data():
    rows = {(r[0], r[1]): r for r in T.layer_gemms(128)}
    # unit stride, pads KH-1-PH >= 0, Fg*KH*KW a multiple of 4: every AlexNet conv's bwd_data may
    assert all(rows[(c, "bwd_data")][-1] for c in ("conv2a", "conv3a", "conv4a", "conv5a"))
    assert not any(r[-1] for r in rows.values() if r[1] != "bwd_data" or r[0].startswith("fc"))
