"""benchmarks/static_model.py: the SASS reader, the main-loop rule, occupancy and the
bounds, on small kernels with known facts (tests/static_kernels/) and on canned SASS."""
import math
from pathlib import Path

import pytest

from benchmarks import common
from benchmarks import static_model as sm

HERE = Path(__file__).resolve().parent

# cuobjdump -sass style: a loop 0x0040..0x0080 with 2 FFMA and a wide LDS, an inner
# math-free loop 0x0050..0x0060 inside it, and a forward branch.
CUOBJ = """
        code for sm_90
                Function : toy
        /*0000*/                   LDC R1, c[0x0][0x28] ;        /* 0x0 */
        /*0010*/               @P0 BRA 0x90 ;                    /* 0x0 */
        /*0020*/                   MOV R2, RZ ;                  /* 0x0 */
        /*0030*/                   NOP ;                         /* 0x0 */
        /*0040*/                   LDS.128 R4, [R2+0x10] ;       /* 0x0 */
        /*0050*/                   IADD3 R3, R3, 0x1, RZ ;       /* 0x0 */
        /*0060*/              @!P1 BRA 0x50 ;                    /* 0x0 */
        /*0070*/                   FFMA R8, R4, R5, R8 ;         /* 0x0 */
        /*0080*/                   FFMA R9, R6, R7, R9 ;         /* 0x0 */
        /*0088*/               @P2 BRA 0x40 ;                    /* 0x0 */
        /*0090*/                   EXIT ;                        /* 0x0 */
"""
# the same in nvdisasm's style (labels instead of addresses in branches)
NVDIS = """
.text.toy:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/               @P0 BRA `(.L_x_2) ;
        /*0020*/                   MOV R2, RZ ;
        /*0030*/                   NOP ;
.L_x_0:
        /*0040*/                   LDS.128 R4, [R2+0x10] ;
.L_x_1:
        /*0050*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0060*/              @!P1 BRA `(.L_x_1) ;
        /*0070*/                   FFMA R8, R4, R5, R8 ;
        /*0080*/                   FFMA R9, R6, R7, R9 ;
        /*0088*/               @P2 BRA `(.L_x_0) ;
.L_x_2:
        /*0090*/                   EXIT ;
"""


@pytest.mark.parametrize("text", [CUOBJ, NVDIS], ids=["cuobjdump", "nvdisasm"])
def test_sass_reader_and_main_loop_rule(text):
    funcs = sm.parse_sass(text)
    ins = funcs["toy"]
    assert [i.opcode for i in ins][:3] == ["LDC", "BRA", "MOV"]
    assert ins[1].target == 0x90 and ins[1].pred == "@P0"
    assert sorted(sm.loops(ins)) == [(4, 9), (5, 6)]        # [0x40, 0x88] and the inner [0x50, 0x60]
    assert sm.main_loop(ins) == (4, 9)
    body = sm.main_loop_body(ins, (4, 9))                   # inner math-free loop left out
    m = sm.mix(body)
    assert m["instructions"] == 4 and m["classes"]["math"] == 2 and m["math_fraction"] == 0.5
    assert m["widths"] == {"LDS.128": 1}
    assert m["smem_wavefronts_min"] == 1 and m["smem_wavefronts_width"] == 4
    assert sm.mix(ins[4:10])["math_fraction"] == pytest.approx(2 / 6)
    issue, smem = sm.issue_and_smem_bounds(m)
    assert issue == 0.5 and smem == pytest.approx(2 / 4)    # 2 math / (4 per cycle x 1 wavefront)


def test_occupancy_rules():
    # 128 registers, 256 threads: 4096 per warp, 16 warps -> 2 blocks (v3's budget)
    o = sm.occupancy(128, 16640, 256)
    assert (o["blocks"], o["warps"], o["limit"]) == (2, 16, "registers")
    # 40 registers round to 40 per thread (multiple of 8): 1280 per warp, 51 warps -> 6 blocks
    assert sm.occupancy(40, 0, 256)["blocks"] == 6
    # 41 registers allocate as 48: 1536 per warp, 42 warps -> 5 blocks
    assert sm.occupancy(41, 0, 256)["blocks"] == 5
    # few registers: the 2048-thread limit, then the 32-block limit
    assert sm.occupancy(16, 0, 256)["limit"] == "threads" and sm.occupancy(16, 0, 256)["blocks"] == 8
    assert sm.occupancy(16, 0, 32) == dict(sm.occupancy(16, 0, 32), blocks=32, limit="blocks")
    # shared memory with the 1 KB reservation per block: 228 KB / (48 KB + 1 KB) = 4
    o = sm.occupancy(16, 48 * 1024, 128)
    assert (o["blocks"], o["limit"]) == (4, "shared")
    assert sm.occupancy(16, 228 * 1024, 128)["blocks"] == 0      # over the per-block limit
    with pytest.raises(ValueError, match="1..1024"):
        sm.occupancy(32, 0, 2048)


def test_waves():
    assert sm.waves(264, 2) == (1.0, 1.0)
    w, eff = sm.waves(270, 2)
    assert w == pytest.approx(270 / 264) and eff == pytest.approx(w / 2)
    assert sm.waves(10, 0) == (math.inf, 0.0)
    # the busiest SM: 270 blocks on 132 SMs -> 3 on some, 2.045 on average
    assert sm.tail_efficiency(270) == pytest.approx((270 / 132) / 3)
    assert sm.tail_efficiency(264) == 1.0 and sm.tail_efficiency(66) == 0.5


def test_resource_usage_reader():
    text = """ Function k1:
  REG:105 STACK:8 SHARED:13568 LOCAL:16 CONSTANT[0]:616 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function k2:
  REG:14 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:548 TEXTURE:0 SURFACE:0 SAMPLER:0"""
    r = sm.parse_resource_usage(text)
    assert r["k1"] == {"registers": 105, "stack_bytes": 8, "local_bytes": 16, "smem_reported": 13568,
                       "smem_bytes": 12544}
    assert r["k2"]["smem_bytes"] == 0


tools = pytest.mark.skipif(not (sm.find_tool("nvcc") and sm.find_tool("cuobjdump")),
                           reason="nvcc and cuobjdump are needed (make installs cuobjdump from PyPI)")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "model_kernels.cubin"
    report = sm.build_cubin(HERE / "static_kernels" / "model_kernels.cu", out)
    return sm.analyse_binary(out, report)


@tools
def test_known_instruction_counts(small):
    k = small["fma_loop"]
    loop = k["main_loop"]
    assert loop["opcodes"]["FFMA"] == 32 and loop["classes"]["math"] == 32
    assert loop["instructions"] <= 40                        # 32 FFMA + the loop's counter and branch
    assert loop["math_fraction"] > 0.8 and loop["classes"]["lds"] == loop["classes"]["ldg"] == 0
    assert k["spill_store_bytes"] == 0 and k["local_instructions"] == 0
    # the nest: the inner loop (16 FFMA) is the main loop, not the outer one (18)
    assert small["nested_loops"]["main_loop"]["opcodes"]["FFMA"] == 16
    assert small["nested_loops"]["loops"] >= 2               # (nvcc may add versions of the nest)


@tools
def test_known_occupancy(small):
    k = small["smem_40000"]
    assert k["smem_bytes"] == 40000 and k["smem_reported"] == 41024
    o = sm.occupancy(k["registers"], k["smem_bytes"], 256)
    assert (o["blocks"], o["warps"], o["limit"]) == (5, 40, "shared")
    assert k["main_loop"]["classes"]["math"] == 0          # no loop with math: counted whole


@tools
def test_streaming_kernel_comes_out_memory_bound(small):
    k = small["axpy_stream"]
    loop = k["main_loop"]
    assert loop["opcodes"]["FFMA"] == 1 and loop["widths"]["LDG.32"] == 2 and loop["widths"]["STG.32"] == 1
    n = 1 << 26
    b = sm.launch_bound(k, blocks=132 * 8, threads=256, flops=2 * n, min_bytes=12 * n)
    assert b["limiter"] == "gmem"
    assert b["gmem_bound"] == pytest.approx((2 * n / sm.PEAK_FLOPS) / (12 * n / sm.DRAM_BYTES_S))
    assert b["bound"] < 0.02 and b["wave_eff"] == 1.0
    # the FFMA loop with the same launch is issue-bound instead
    f = sm.launch_bound(small["fma_loop"], blocks=132 * 8, threads=256, flops=1e12, min_bytes=1e6)
    assert f["limiter"] == "issue" and f["bound"] == pytest.approx(f["issue_bound"])


def test_alexnet_layers_come_from_the_config():
    layers = {l.name: l for l in common.alexnet_conv_layers("alexnet")}
    assert set(layers) == {f"conv{i}{s}" for i in range(1, 6) for s in ("", "/col")}
    assert layers["conv2"].groups == 2 and layers["conv2"].c == 96 and layers["conv2"].f == 256
    assert layers["conv3"].groups == 1 and layers["conv3"].c == 256 and layers["conv3"].f == 384
    assert layers["conv3/col"].f == 192 and layers["conv1/col"].shapes(128)[2] == (128, 48, 55, 55)


def test_conv_launch_plan_reads_the_launcher():
    from convnet.kernel_ops import conv
    layers = {l.name: l for l in common.alexnet_conv_layers("alexnet")}
    p = sm.conv_launch(conv, "bwd_filter", "v3", layers["conv2/col"])
    geo = conv.Geometry.of("test", (128, 48, 27, 27), (128, 48, 5, 5), 1, 2, 1)
    splits, chunk = conv.backward_filter_splits(geo, "v3")
    assert p["splits"] == splits and p["k_chunk"] == chunk
    tm, tn, threads, suffix = conv._tile("v3", 128)
    assert p["blocks"] == -(-48 * 25 // tn) * -(-128 // tm) * splits and p["kernel"] == "conv2d_bwd_filter_v3" + suffix
    p = sm.conv_launch(conv, "fwd", "v2", layers["conv1"])
    assert p["kernel"] == "conv2d_fwd_v2" and p["useful_fma"] == 128 * 96 * 55 * 55 * 3 * 121
    assert p["launched_fma"] >= p["useful_fma"]
    assert sm.conv_launch(conv, "bwd_data", "v3", layers["conv3"])["kernel"].startswith("conv2d_bwd_data_v3_s1")
    # v4: the launcher's own plan (row tile, splits); where v4 does not apply, v3 as the launcher runs
    geo3 = conv.Geometry.of("test", (128, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1)
    v4 = conv.v4_plan(geo3, "fwd")
    p = sm.conv_launch(conv, "fwd", "v4", layers["conv3"])
    assert p["kernel"] == "conv2d_fwd_v4" + v4.suffix and p["splits"] == v4.splits
    assert p["launched_fma"] >= p["useful_fma"]
    assert sm.conv_launch(conv, "bwd_data", "v4", layers["conv1"])["kernel"].startswith("conv2d_bwd_data_v3")


@pytest.mark.skipif(not sm.find_tool("cuobjdump") or not (common.ROOT / "build/kernels/conv.fatbin").exists(),
                    reason="needs cuobjdump and the built fatbins (make)")
def test_model_over_the_shipped_conv_kernels(tmp_path, capsys):
    assert sm.main(["--kernels", "conv", "--no-make", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "STATIC UPPER BOUNDS" in text and "conv5/col" in text
    import json
    doc = json.loads(next(tmp_path.glob("static-*.json")).read_text())
    assert doc["rows"] and doc["iteration"]
    for r in doc["rows"]:
        assert 0 < r["bound"] <= 1 and 0 < r["fill"] <= 1 and 0 < r["wave_eff"] <= r["tail_eff"] <= 1
        assert r["bound"] <= min(r["issue_bound"], r["smem_bound"], r["gmem_bound"]) + 1e-12
        assert r["estimate"] <= r["bound"] and r["estimate_ms"] >= r["ms"]
        assert r["ms"] > 0 and r["waves"] == pytest.approx(r["blocks"] / (132 * r["blocks_per_sm"]))
