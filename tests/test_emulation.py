"""The CPU emulation of the CUDA execution model (bindings/), on the small
kernels of tests/emu_kernels/*.cu (built into convnet._emu_test by `make emu`).

Thread coordinates, static and dynamic shared memory, barriers that are
needed (a missing one must give a wrong result), broken barriers (a clear
error, never a hang), warp shuffles and votes, atomics from several OS
threads, bad launches, and the AddressSanitizer build.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    LIB = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module="convnet._emu_test")
    EMU = kernels._load_emu("convnet._emu_test")
except kernels.EmulationNotBuilt as e:  # pragma: no cover - the build is part of `make`
    pytest.skip(f"{e}", allow_module_level=True)


def k(name):
    return LIB.get_function(name, like="emu")


@pytest.fixture
def threads():
    """Run a test with a given number of OS threads, restoring the setting."""
    old = EMU.threads()
    yield EMU.set_threads
    EMU.set_threads(old)


@pytest.fixture
def order():
    old = EMU.order()
    yield EMU.set_order
    EMU.set_order(old)


# ---- thread coordinates --------------------------------------------------------------
@pytest.mark.parametrize("grid,block", [((2, 3, 2), (4, 3, 2)), ((5, 1, 1), (33, 1, 1)), ((1, 2, 3), (1, 1, 7)),
                                        ((3, 1, 1), (32, 32, 1)), ((1, 1, 2), (2, 8, 64))])
def test_coordinates_3d(grid, block):
    per_block = int(np.prod(block))
    n = int(np.prod(grid)) * per_block
    out = np.zeros((n, 12), np.uint32)
    k("test_coords")(grid, block, (out, n))
    i = np.arange(n)
    t, b = i % per_block, i // per_block
    want = np.stack([t % block[0], t // block[0] % block[1], t // (block[0] * block[1]),
                     b % grid[0], b // grid[0] % grid[1], b // (grid[0] * grid[1]),
                     *[np.full(n, d) for d in block], *[np.full(n, d) for d in grid]], axis=1)
    np.testing.assert_array_equal(out, want)


def test_scalars_of_every_type_and_int_grid():
    x = np.arange(70, dtype=np.float32)
    y = np.zeros_like(x)
    echo = np.zeros(3, np.uint64)
    k("test_axpb")(3, 32, (x, y, 70, np.float64(0.25), np.uint32(2**32 - 1), 2**64 - 1, 255, echo))
    np.testing.assert_array_equal(y, x + 0.25)
    assert echo.tolist() == [2**32 - 1, 2**64 - 1, 255]


# ---- shared memory and barriers ----------------------------------------------------------
@pytest.mark.parametrize("rows,cols", [(32, 32), (45, 70), (1, 33)])
def test_transpose_with_barrier(rows, cols):
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    y = np.zeros((cols, rows), np.float32)
    k("test_transpose")(((cols + 31) // 32, (rows + 31) // 32), (32, 8), (x, y, rows, cols, 1))
    np.testing.assert_array_equal(y, x.T)


@pytest.mark.parametrize("mode", ["shuffle", "forward", "reverse"])
def test_transpose_without_barrier_is_wrong(mode, order):
    """The scheduler must make a missing __syncthreads visible, in every order."""
    order(mode)
    rows, cols = 64, 64
    x = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)
    y = np.zeros((cols, rows), np.float32)
    tr = k("test_transpose")
    tr((2, 2), (32, 8), (x, y, rows, cols, 1))
    np.testing.assert_array_equal(y, x.T)
    # the same data again, without the barrier: reads of unwritten tile entries
    y[:] = 0
    tr((2, 2), (32, 8), (x, y, rows, cols, 0))
    wrong = np.mean(y != x.T)
    assert wrong > 0.2, f"only {wrong:.0%} of the transpose is wrong without the barrier"
    assert np.isnan(y).any(), "unwritten shared memory should read as NaN"


@pytest.mark.parametrize("n,block", [(1000, 256), (64, 64), (300, 128)])
def test_block_sum(n, block):
    x = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    nb = (n + block - 1) // block
    out = np.zeros(nb, np.float32)
    s = k("test_block_sum")
    s(nb, block, (x, out, n, 1), shared_mem=block * 4)
    want = np.pad(x, (0, nb * block - n)).reshape(nb, block).astype(np.float64).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    out[:] = 0
    s(nb, block, (x, out, n, 0), shared_mem=block * 4)
    assert not np.allclose(out, want, rtol=1e-3, atol=1e-3), "a tree reduction without barriers gave the right sums"


def test_static_shared_is_per_block(threads):
    threads(2)
    out = np.full(64, -1, np.int32)
    k("test_static_shared")((8, 8), 256, (out,))
    np.testing.assert_array_equal(out, 0)


def test_unwritten_shared_memory_is_poisoned():
    out = np.zeros(64 + 32, np.uint32)
    f = k("test_unwritten_shared")
    for _ in range(2):   # the second launch must not see what the first wrote
        f(3, 64, (out, 32), shared_mem=32 * 4)
        assert (out == 0xFFFFFFFF).all(), out


def test_syncthreads_count_and_or():
    f = k("test_sync_votes")
    out = np.zeros(3, np.int32)
    for pred in [np.ones(96, np.int32), np.zeros(96, np.int32), (np.arange(96) % 3 == 0).astype(np.int32)]:
        f(1, 96, (pred, out))
        assert out.tolist() == [int(pred.sum()), int(pred.all()), int(pred.any())]


@pytest.mark.parametrize("mode,pattern", [
    (0, r"deadlock in kernel test_bad_barrier block \(0,0,0\): 16 of 100 threads wait at "
        r"tests/emu_kernels/sync\.cu:\d+, 84 exited"),
    (1, r"deadlock in kernel test_bad_barrier block \(0,0,0\): 50 of 100 threads wait at "
        r"tests/emu_kernels/sync\.cu:\d+, 50 of 100 threads wait at tests/emu_kernels/sync\.cu:\d+ "
        r"\(__syncthreads at different call sites\)"),
    (2, r"deadlock in kernel test_bad_barrier block \(3,0,0\): 64 of 100 threads wait at "
        r"tests/emu_kernels/sync\.cu:\d+, 36 exited"),
])
def test_divergent_barrier_is_an_error_not_a_hang(mode, pattern, threads):
    threads(2)
    out = np.zeros(8 * 100, np.float32)
    f = k("test_bad_barrier")
    with pytest.raises(RuntimeError, match=pattern):
        f(8 if mode == 2 else 1, 100, (out, mode))
    # the interpreter survives and the next launch works
    out[:] = 0
    f(8, 100, (out, 3))
    assert (out == 1).all()


# ---- warps ---------------------------------------------------------------------------------
def shfl_reference(v, kind, arg, width):
    out = np.empty_like(v)
    for t in range(v.size):
        warp, lane = t // 32 * 32, t % 32
        seg = lane & ~(width - 1)
        if kind == 0:
            src = seg + (arg & (width - 1))
        elif kind == 1:
            src = lane - arg if lane - arg >= seg else lane
        elif kind == 2:
            src = lane + arg if lane + arg < seg + width else lane
        else:
            src = lane ^ arg if (lane ^ arg) < seg + width else lane
        out[t] = v[warp + src]
    return out


@pytest.mark.parametrize("kind", [0, 1, 2, 3], ids=["idx", "up", "down", "xor"])
@pytest.mark.parametrize("arg,width", [(1, 32), (5, 32), (3, 8), (2, 4), (7, 16), (0, 1), (31, 32)])
def test_shuffles(kind, arg, width):
    v = np.random.default_rng(kind * 100 + arg).integers(-1000, 1000, 96).astype(np.int32)
    out = np.zeros_like(v)
    k("test_shfl")(1, 96, (v, out, kind, arg, width))
    np.testing.assert_array_equal(out, shfl_reference(v, kind, arg, width))


def test_shuffle_floats_keep_their_bits():
    v = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    out = np.zeros_like(v)
    k("test_shfl_float")(1, 64, (v, out))
    np.testing.assert_array_equal(out, v[np.arange(64) ^ 1] + v)


def test_votes():
    pred = (np.random.default_rng(4).random(64) < 0.5).astype(np.int32)
    pred[32:] = 1   # second warp: all true
    out = np.zeros((64, 4), np.uint32)
    k("test_vote")(1, 64, (pred, out))
    for w in range(2):
        p = pred[32 * w:32 * w + 32]
        ballot = sum(1 << i for i in range(32) if p[i])
        for lane in range(32):
            half = 0x0000FFFF if lane < 16 else 0xFFFF0000
            assert out[32 * w + lane].tolist() == [ballot, int(p.any()), int(p.all()), ballot & half]


@pytest.mark.parametrize("n,block", [(1000, 96), (77, 45), (4096, 256)])
def test_warp_sum_partial_warps(n, block):
    x = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    out = np.zeros(1, np.float32)
    k("test_warp_sum")((n + block - 1) // block, block, (x, out, n))
    assert out[0] == pytest.approx(float(x.astype(np.float64).sum()), abs=1e-3)


def test_shuffle_with_exited_lanes_is_an_error():
    out = np.zeros(64, np.int32)
    with pytest.raises(RuntimeError, match=r"deadlock in kernel test_shfl_exited block \(0,0,0\): warp 0: "
                                           r"lanes 0-15 wait at .*warp\.cu:\d+ in __shfl_sync\(mask 0xffffffff\); "
                                           r"lanes 16-31 exited$"):
        k("test_shfl_exited")(1, 64, (out,))


@pytest.mark.parametrize("mode,pattern", [(0, "width 3 is not a power of 2"), (1, "lane 5 is not in its own mask")])
def test_bad_shuffles(mode, pattern):
    out = np.zeros(32, np.int32)
    with pytest.raises(RuntimeError, match=pattern):
        k("test_shfl_bad")(1, 32, (out, mode))


# ---- atomics -------------------------------------------------------------------------------
def test_float_atomic_add_over_many_blocks_and_threads(threads):
    threads(4)
    n = 50_000
    x = np.random.default_rng(6).random(n).astype(np.float32)
    out = np.zeros(1, np.float32)
    k("test_atomic_sum")((n + 255) // 256, 256, (x, out, n))
    assert out[0] == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-4)


def test_integer_atomics(threads):
    threads(3)
    n = 3000
    c = np.array([0, -1, 2**31 - 1, 0, 0, 0, 0], np.int32)
    big = np.zeros(2, np.uint64)
    u = np.zeros(1, np.uint32)
    k("test_atomic_int")((n + 127) // 128, 128, (c, big, u, n))
    xor = 0
    for i in range(n):
        xor ^= i
    assert c.tolist() == [n, n - 1, 0, 1, xor, 42, 1]
    assert u[0] == n % 10
    assert big.tolist() == [n * (n - 1) // 2, (n - 1) << 33]


def test_spin_lock_within_a_block():
    counts = np.zeros(4, np.int32)
    k("test_spinlock")(4, 200, (counts,))
    assert counts.tolist() == [200] * 4


def test_last_block_pattern_with_threadfence_and_printf(threads, capfd):
    threads(2)
    n = 1000
    x = np.ones(n, np.float32)
    nb = (n + 127) // 128
    partial = np.zeros(nb, np.float32)
    counter = np.zeros(1, np.uint32)
    out = np.zeros(1, np.float32)
    f = k("test_last_block_sum")
    for _ in range(3):   # atomicInc wraps the counter back to 0: the launch repeats
        out[0] = 0
        f(nb, 128, (x, partial, counter, out, n))
        assert out[0] == n and counter[0] == 0
    lines = [s for s in capfd.readouterr().out.splitlines() if s.startswith("last block")]
    assert len(lines) == 3 and all(s.endswith(f"of {nb}: sum {n}.0") for s in lines), lines


# ---- math ---------------------------------------------------------------------------------------
def _math_reference(x):
    a = np.abs(x) + np.float32(0.5)
    i = np.arange(x.size)
    return [np.exp(x), np.log(a), a ** np.float32(1.7), np.sqrt(a), 1 / np.sqrt(a), np.maximum(x, 0.25),
            np.minimum(x, 0.25), np.abs(x), x * 3 + 1, np.tanh(x), np.exp2(x), np.log2(a),
            np.exp(x), np.log(a), a ** np.float32(1.7), x / a, 1 / np.sqrt(a), np.clip(x, 0, 1),
            np.maximum(x, 0), np.minimum(i, 7), np.abs(x), x, np.floor(x), np.maximum(i, 3)]


def test_math_functions():
    n = 300
    x = np.random.default_rng(7).uniform(-4, 4, n).astype(np.float32)
    out = np.zeros((n, 24), np.float32)
    k("test_math")(3, 128, (x, out, n))
    for j, want in enumerate(_math_reference(x.astype(np.float64))):
        np.testing.assert_allclose(out[:, j], want, rtol=2e-6, atol=1e-6, err_msg=f"function {j}")


def test_integer_intrinsics():
    rng = np.random.default_rng(8)
    n = 200
    a = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    a[:4] = [0, 1, 0x80000000, 0xFFFFFFFF]
    out = np.zeros((n, 8), np.uint32)
    k("test_int_math")(2, 128, (a, b, out, n))

    def s24(v):
        v = int(v) & 0xFFFFFF
        return v - (1 << 24) if v & 0x800000 else v

    for i in range(n):
        x, y = int(a[i]), int(b[i])
        sx, sy = (x - 2**32 if x >= 2**31 else x), (y - 2**32 if y >= 2**31 else y)
        want = [(x * y) >> 32, (s24(x) * s24(y)) & 0xFFFFFFFF, ((x & 0xFFFFFF) * (y & 0xFFFFFF)) & 0xFFFFFFFF,
                bin(x).count("1"), 32 - x.bit_length(), (x & -x).bit_length(), int(f"{x:032b}"[::-1], 2),
                max(sx, sy) & 0xFFFFFFFF]
        assert out[i].tolist() == want, (i, x, y)


# ---- errors inside kernels and bad launches ------------------------------------------------------
def test_assert_names_block_thread_and_line():
    x = np.ones(300, np.float32)
    x[137] = -1
    with pytest.raises(RuntimeError, match=r"assertion `x\[i\] >= 0.0f' failed in kernel test_assert block "
                                           r"\(1,0,0\) thread \(9,0,0\) at tests/emu_kernels/errors\.cu:\d+"):
        k("test_assert")(3, 128, (x, 300))
    k("test_assert")(3, 128, (np.ones(300, np.float32), 300))


def test_floating_point_state_and_math():
    out = np.zeros(3, np.float32)
    k("test_fp")(1, 32, (out,))
    assert out[0] == np.float32(1) / np.float32(3)
    assert out[1] != 0, "denormals must not be flushed to zero"
    assert out[2] == 51.25


def test_bad_arguments():
    f = k("test_axpb")
    x = np.zeros(10, np.float32)
    y = np.zeros(10, np.float32)
    echo = np.zeros(3, np.uint64)
    good = (x, y, 10, 1.0, 1, 1, 1, echo)

    def args(i, v):
        a = list(good)
        a[i] = v
        return tuple(a)

    with pytest.raises(TypeError, match=r"kernel test_axpb: parameter 0 'x' \(const float\*\) expects dtype "
                                        r"float32, got float64"):
        f(1, 32, args(0, x.astype(np.float64)))
    with pytest.raises(ValueError, match=r"parameter 1 'y' \(float\*\): the array must be C-contiguous"):
        f(1, 32, args(1, np.zeros(20, np.float32)[::2]))
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 1 'y'.*read-only"):
        f(1, 32, args(1, ro))
    f(1, 32, args(0, ro))   # a read-only array is fine for a const pointer
    with pytest.raises(TypeError, match="parameter 0 'x'.*expects a NumPy array, got builtins.list"):
        f(1, 32, args(0, [1.0]))
    with pytest.raises(TypeError, match=r"parameter 2 'n' \(int\) expects an integer, got float"):
        f(1, 32, args(2, 10.0))
    with pytest.raises(ValueError, match=r"parameter 2 'n' \(int\): 2147483648 is out of range"):
        f(1, 32, args(2, 2**31))
    with pytest.raises(ValueError, match=r"parameter 4 'u' \(unsigned int\): -1 is out of range"):
        f(1, 32, args(4, -1))
    with pytest.raises(ValueError, match=r"parameter 6 'c' \(unsigned char\): 256 is out of range"):
        f(1, 32, args(6, 256))
    with pytest.raises(ValueError, match=r"parameter 3 'alpha' \(float\): 1e\+39 does not fit in a float32"):
        f(1, 32, args(3, 1e39))
    with pytest.raises(TypeError, match="takes 8 arguments"):
        f(1, 32, good[:-1])
    with pytest.raises(ValueError, match=r"block \(1025, 1, 1\) has 1025 threads; at most 1024"):
        f(1, 1025, good)
    with pytest.raises(ValueError, match=r"block \(32, 32, 2\) has 2048 threads"):
        f(1, (32, 32, 2), good)
    with pytest.raises(ValueError, match="grid dimensions must be >= 1"):
        f((1, 0), 32, good)
    with pytest.raises(TypeError, match="block must be an int or a tuple of 1 to 3 ints"):
        f(1, (1, 2, 3, 4), good)
    with pytest.raises(ValueError, match="shared_mem must be an int >= 0"):
        f(1, 32, good, shared_mem=-1)
    with pytest.raises(ValueError, match="unknown kernel 'no_such_kernel'"):
        LIB.get_function("no_such_kernel", like="emu")
    with pytest.raises(ValueError, match="like must be an array, 'emu' or 'cuda'"):
        LIB.get_function("test_axpb", like="gpu")
    f(1, 32, good)   # and the good call still works
    assert (y == 1).all()


def test_extension_checks_on_its_own():
    """convnet._emu_test.launch checks what the loader would have checked."""
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        EMU.launch("nope", (1, 1, 1), (1, 1, 1), 0, [])
    with pytest.raises(TypeError, match="takes 2 arguments, got 1"):
        EMU.launch("test_coords", (1, 1, 1), (1, 1, 1), 0, [0])
    with pytest.raises(ValueError, match=r"block \(2048,1,1\) has more than 1024 threads"):
        EMU.launch("test_coords", (1, 1, 1), (2048, 1, 1), 0, [x.ctypes.data, 0])
    with pytest.raises(ValueError, match="dynamic shared memory"):
        EMU.launch("test_coords", (1, 1, 1), (1, 1, 1), 1 << 20, [x.ctypes.data, 0])
    with pytest.raises(ValueError, match=r"parameter 1 \(int\) out of range"):
        EMU.launch("test_coords", (1, 1, 1), (1, 1, 1), 0, [x.ctypes.data, 2**40])
    with pytest.raises(TypeError, match=r"parameter 0 \(unsigned int\*\) expects an int address, got float"):
        EMU.launch("test_coords", (1, 1, 1), (1, 1, 1), 0, [1.5, 0])
    with pytest.raises(TypeError, match="grid must be a 3-tuple"):
        EMU.launch("test_coords", (1, 1), (1, 1, 1), 0, [x.ctypes.data, 0])


def test_settings():
    s = EMU.settings()
    assert s["threads"] >= 1 and s["order"] in ("shuffle", "forward", "reverse")
    assert s["context_switch"] in ("x86-64 asm", "ucontext")
    with pytest.raises(ValueError, match="order must be"):
        EMU.set_order("random")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        EMU.set_threads(0)
    # from the environment; a bad value is a warning, not a crash at import
    code = "import convnet._emu_test as e; s = e.settings(); print(s['threads'], s['order'], s['stack_bytes'])"
    env = dict(os.environ, CONVNET_EMU_THREADS="3", CONVNET_EMU_ORDER="reverse", CONVNET_EMU_STACK_KB="64")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["3", "reverse", str(64 * 1024)], r.stderr
    env.update(CONVNET_EMU_THREADS="many", CONVNET_EMU_ORDER="bogus")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split()[1] == "shuffle", r.stderr
    assert "ignoring CONVNET_EMU_THREADS=many" in r.stderr and "ignoring CONVNET_EMU_ORDER" in r.stderr


def test_repeated_launches_of_8_blocks_sum_right(threads):
    """8 blocks x 256 threads launch and sum right, launch after launch; the time of one
    launch is printed (a few ms: fibers), not asserted."""
    threads(2)
    n = 8 * 256
    x = np.arange(n, dtype=np.float32)
    f = k("test_block_sum")
    f(8, 256, (x, np.zeros(8, np.float32), n, 1), shared_mem=1024)   # warm: fibers and stacks exist
    best = float("inf")
    for _ in range(5):
        out = np.zeros(8, np.float32)
        t0 = time.perf_counter()
        f(8, 256, (x, out, n, 1), shared_mem=1024)
        best = min(best, time.perf_counter() - t0)
        np.testing.assert_array_equal(out, x.reshape(8, 256).sum(axis=1))
    # a figure to read (pytest -s), not a pass/fail: timing belongs to benchmarks
    print(f"\nemulation: 8 blocks x 256 threads, 9 barriers each: {best * 1e3:.2f} ms")


def test_launch_in_a_forked_child(threads):
    """The OS-thread pool does not survive fork(): the child makes a new one
    instead of waiting for threads that do not exist."""
    threads(2)
    n = 4096
    x = np.ones(n, np.float32)
    f = k("test_atomic_sum")
    out = np.zeros(1, np.float32)
    f(16, 256, (x, out, n))     # the parent's pool exists now
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        try:
            out[0] = 0
            f(16, 256, (x, out, n))
            os._exit(0 if out[0] == n else 1)
        except BaseException:
            os._exit(2)
    deadline = time.time() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("a launch in a forked child hangs")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


def test_launch_releases_the_gil():
    """Other Python threads run while a launch is under way."""
    import threading
    n = 256 * 100
    x = np.ones(n, np.float32)
    out = np.zeros(100, np.float32)
    f = k("test_block_sum")
    started = threading.Event()

    def work():
        started.set()
        f(100, 256, (x, out, n, 1), shared_mem=1024)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    spins = 0
    while t.is_alive():
        spins += 1
    t.join()
    assert (out == 256).all()
    assert spins > 1000, f"the main thread ran only {spins} loop iterations during the launches"


def test_deep_recursion_fits_the_fiber_stack():
    out = np.zeros(64 + 1, np.int32)
    k("test_recurse")(1, 64, (out, 100))   # ~100 KiB of stack per fiber
    assert (out[:64] == sum(range(101))).all()


def test_stack_overflow_faults_instead_of_corrupting():
    """A fiber running off its stack hits the guard page: the process dies
    with SIGSEGV (as a GPU kernel would fault); it does not run on silently."""
    code = ("import numpy as np; from convnet import kernels; "
            "L = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module='convnet._emu_test'); "
            "out = np.zeros(33, np.int32); L.get_function('test_recurse', like='emu')(1, 32, (out, 5000)); "
            "print('survived')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "survived" not in r.stdout
    assert "Segmentation fault" in r.stderr or r.returncode == -11


# ---- AddressSanitizer ------------------------------------------------------------------------------
@pytest.mark.asan
def test_asan_build_reports_out_of_bounds_read_with_file_and_line():
    """`make` the ASan build of the test kernels, run an out-of-bounds read in a
    subprocess with libasan preloaded, and find the .cu file and line in the report."""
    import shutil
    import sysconfig
    if not (shutil.which("make") and shutil.which("gcc")):
        pytest.skip("needs make and gcc")
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("gcc has no libasan.so")
    target = f"build/asan/convnet/_emu_test{sysconfig.get_config_var('EXT_SUFFIX')}"
    r = subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import numpy as np; from convnet import kernels; "
            "L = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module='convnet._emu_test'); "
            "f = L.get_function('test_oob_read', like='emu'); "
            "x = np.ones(100, np.float32); y = np.zeros(100, np.float32); "
            "f(1, 128, (x, y, 100, 0)); assert (y == 1).all(); print('in bounds: ok', flush=True); "
            "f(1, 128, (x, y, 100, 3))")
    env = dict(os.environ, LD_PRELOAD=libasan, CONVNET_EMU_DIR=os.path.join(ROOT, "build", "asan", "convnet"),
               ASAN_OPTIONS="detect_leaks=0", CONVNET_EMU_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "in bounds: ok" in r.stdout, r.stderr[-3000:]
    assert r.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-3000:]
    assert "READ of size 4" in r.stderr
    line = next(i + 1 for i, s in enumerate(open(os.path.join(ROOT, "tests/emu_kernels/errors.cu")))
                if "y[i] = x[i + offset]" in s)
    assert f"tests/emu_kernels/errors.cu:{line}" in r.stderr, r.stderr[-3000:]
    # dynamic shared memory past the launch's shared_mem is poisoned for ASan
    code = ("import numpy as np; from convnet import kernels; "
            "L = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module='convnet._emu_test'); "
            "f = L.get_function('test_smem_overrun', like='emu'); out = np.zeros(1, np.float32); "
            "f(1, 32, (out, 63), shared_mem=256); print('in bounds: ok', flush=True); "
            "f(1, 32, (out, 64), shared_mem=256)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "in bounds: ok" in r.stdout and r.returncode != 0, r.stderr[-3000:]
    assert "AddressSanitizer: use-after-poison" in r.stderr, r.stderr[-3000:]
    line = next(i + 1 for i, s in enumerate(open(os.path.join(ROOT, "tests/emu_kernels/sync.cu")))
                if "out[0] = s[word]" in s)
    assert f"tests/emu_kernels/sync.cu:{line}" in r.stderr, r.stderr[-3000:]
