"""The tensor-core helpers of kernels/mma.cuh on the CPU emulation
(tests/emu_kernels/mma.cu): the input roundings against an independent
float64 rounding, mma.sync m16n8k8 tf32 and m16n8k16 bf16 (fragments built
from the PTX ISA's layout formulas) on odd shapes against a float64 product of
the rounded inputs within the stated bound, ldmatrix x1/x2/x4 (plain and
.trans) against the ISA's register layout, and cp.async's zero fill.

The bound (mma.cuh): a sum chained over S mma instructions is within
(S + 1) * 2^-22 * (|c| + sum_k |a_k b_k|) of the exact sum of the rounded
inputs' products; a fragment in a wrong lane or register is off by O(1).
"""
import numpy as np
import pytest

from convnet import kernels
from convnet.precision import round_bf16, round_tf32

try:
    LIB = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module="convnet._emu_test")
    kernels._load_emu("convnet._emu_test")
except kernels.EmulationNotBuilt as e:  # pragma: no cover - the build is part of `make`
    pytest.skip(f"{e}", allow_module_level=True)


def k(name):
    return LIB.get_function(name, like="emu")


def _round_nearest(x, bits, ties_away):
    """x (float64) rounded to `bits` significant bits, by frexp (no bit tricks)."""
    m, e = np.frexp(x)                        # x = m * 2^e, 0.5 <= |m| < 1
    s = m * 2.0 ** bits
    if ties_away:
        r = np.sign(s) * np.floor(np.abs(s) + 0.5)
    else:
        r = np.round(s)                       # half to even
    return r * 2.0 ** (e - bits)


def _special_values():
    one = np.float32(1.0)
    ulp = np.spacing(one)                     # 2^-23
    ties = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -11), -(1 + 3 * 2 ** -8)]
    near = [1 + 2 ** -11 - ulp, 1 + 2 ** -11 + ulp, 1 + 2 ** -8 - ulp, 1 + 2 ** -8 + ulp]
    return np.array(ties + near + [0.0, -0.0, 3.0e38, 1e-30, -2.5e-7, 65504.0], np.float32)


def test_tf32_rounding_is_nearest_ties_away():
    rng = np.random.default_rng(0)
    x = np.concatenate([_special_values(), (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 8, 2000))
                        .astype(np.float32)])
    out = np.zeros(x.size, np.uint32)
    k("test_round_tf32")(-(-x.size // 128), 128, (x, out, x.size))
    got = out.view(np.float32).astype(np.float64)
    want = _round_nearest(x.astype(np.float64), 11, ties_away=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out & 0x1FFF, 0)            # low 13 bits cleared
    np.testing.assert_array_equal(round_tf32(x).astype(np.float64), want)   # the Python model agrees


def test_bf16_rounding_is_nearest_even():
    rng = np.random.default_rng(1)
    x = np.concatenate([_special_values(), (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 8, 2000))
                        .astype(np.float32)])
    out = np.zeros(x.size, np.uint32)
    k("test_round_bf16")(-(-x.size // 256), 128, (x, out, x.size))
    got = (out << 16).view(np.float32).astype(np.float64)
    want = _round_nearest(x.astype(np.float64), 8, ties_away=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(round_bf16(x).astype(np.float64), want)


@pytest.mark.parametrize("kind,ksteps,rnd", [("tf32", 8, round_tf32), ("bf16", 16, round_bf16)])
@pytest.mark.parametrize("m,n,kk", [(16, 8, 8), (37, 21, 45), (5, 3, 70)])
def test_mma_on_odd_shapes_within_the_bound(kind, ksteps, rnd, m, n, kk):
    rng = np.random.default_rng(m * 100 + n + kk)
    a = rng.standard_normal((m, kk)).astype(np.float32)
    b = rng.standard_normal((kk, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    d = np.full((m, n), np.nan, np.float32)
    k(f"test_mma_{kind}")((-(-n // 8), -(-m // 16)), 32, (a, b, c, d, m, n, kk))
    ra, rb = rnd(a).astype(np.float64), rnd(b).astype(np.float64)
    exact = ra @ rb + c
    steps = -(-kk // ksteps)
    bound = (steps + 1) * 2.0 ** -22 * (np.abs(ra) @ np.abs(rb) + np.abs(c))
    err = np.abs(d - exact)
    assert np.all(err <= bound), f"worst error / bound = {np.max(err / bound):.2f}"
    # the rounding is really applied: the plain float32 product is measurably different
    plain = a.astype(np.float64) @ b.astype(np.float64) + c
    assert np.max(np.abs(d - plain)) > 10 * np.max(bound)


def _ldmatrix_expected(src, x, trans):
    """The PTX ISA layout: matrix i = rows 8i..8i+7 of src (32 x 8 16-bit values);
    register i of lane l = (row l/4, columns 2(l%4), +1) of matrix i, or of its transpose."""
    out = np.zeros((32, 4), np.uint32)
    for lane in range(32):
        for i in range(x):
            mat = src[8 * i:8 * i + 8]
            if trans:
                mat = mat.T
            lo, hi = mat[lane // 4, 2 * (lane % 4)], mat[lane // 4, 2 * (lane % 4) + 1]
            out[lane, i] = lo | (hi << 16)
    return out


@pytest.mark.parametrize("x", [1, 2, 4])
@pytest.mark.parametrize("trans", [0, 1])
def test_ldmatrix_layout(x, trans):
    src = np.arange(32 * 8, dtype=np.uint32).reshape(32, 8) * 7 + 1000
    out = np.zeros((32, 4), np.uint32)
    k("test_ldmatrix")(1, 32, (src, out, x, trans))
    np.testing.assert_array_equal(out, _ldmatrix_expected(src, x, trans))


def test_cp_async_copies_and_zero_fills():
    rng = np.random.default_rng(3)
    src = rng.standard_normal(256).astype(np.float32)
    valid = (rng.random(256) < 0.7).astype(np.int32)
    valid[128:] = np.repeat(valid[128::4], 4)                  # one flag per 16-byte copy
    out = np.full(256, np.nan, np.float32)
    k("test_cp_async")(1, 32, (src, valid, out))
    np.testing.assert_array_equal(out, np.where(valid != 0, src, 0).astype(np.float32))
