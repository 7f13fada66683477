"""The kernel loader (convnet/kernels.py), its signature parser
(convnet/kernel_sig.py) and the registry generator (bindings/gen_registry.py).

The GPU path runs for real under the `gpu` marker; without a GPU its logic
(fatbin or NVRTC, options, warning once, argument conversion, the dynamic
shared memory opt-in) is checked against a stand-in for CuPy.
"""
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from convnet import kernel_sig, kernels
from convnet.kernel_sig import KernelSignatureError, parse_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- signatures ------------------------------------------------------------------------
TRICKY = r'''
#include "common.cuh"
#define KERNEL extern "C" __global__ void not_a_kernel(double* x)
// extern "C" __global__ void commented_out(double* x) {}
/* extern "C" __global__ void block_commented(double* x) {} */
static const char* s = "extern \"C\" __global__ void in_a_string(double* x)";

template <int B> __device__ void helper(float* x) {}

extern "C" __global__ void __launch_bounds__(256, 2)
multi_line(const float* __restrict__ x,   // (N, C)
           float *__restrict__ y,
           float const* z,
           const unsigned char* const labels,
           unsigned long long seed, unsigned long long int count,
           unsigned n, unsigned int m, int k, float alpha,
           unsigned char flag)
{
}

extern "C" __global__ void no_args() {}
extern "C" __global__ void void_args(void) {}
extern "C"
__global__
void declared(int* out, int);
extern "C" __global__ void declared(int* out, int n) { }
'''


def test_parse_tricky_declarations():
    sigs = parse_source(TRICKY, "kernels/tricky.cu")
    assert [s.name for s in sigs] == ["multi_line", "no_args", "void_args", "declared"]
    ml = sigs[0]
    assert [p.ctype for p in ml.params] == [
        "const float*", "float*", "const float*", "const unsigned char*", "unsigned long long",
        "unsigned long long", "unsigned int", "unsigned int", "int", "float", "unsigned char"]
    assert [p.name for p in ml.params] == ["x", "y", "z", "labels", "seed", "count", "n", "m", "k", "alpha", "flag"]
    assert [p.dtype for p in ml.params[:4]] == [np.float32, np.float32, np.float32, np.uint8]
    assert ml.line == 10 and ml.file == "kernels/tricky.cu"
    assert sigs[1].params == () and sigs[2].params == ()
    decl = sigs[3]
    assert [p.ctype for p in decl.params] == ["int*", "int"] and decl.line == 26   # the definition's line


@pytest.mark.parametrize("decl,pattern", [
    ("double* x", r"kernels/bad\.cu:2: kernel bad: parameter 0 'x' has type 'double \*'"),
    ("float* x, size_t n", r"parameter 1 'n' has type 'size_t'"),
    ("float** x", "pointers to pointers are not allowed"),
    ("float& x", "references and arrays are not allowed"),
    ("float x[4]", "references and arrays are not allowed"),
    ("long n", r"parameter 0 'n' has type 'long'"),
    ("Params p", r"parameter 0 'p' has type 'Params'"),
    ("float* x,", "empty parameter 1"),
])
def test_parse_rejects_types_outside_the_contract(decl, pattern):
    with pytest.raises(KernelSignatureError, match=pattern):
        parse_source(f'\nextern "C" __global__ void bad({decl}) {{}}\n', "kernels/bad.cu")


def test_parse_rejects_conflicting_declarations_and_duplicates(tmp_path):
    with pytest.raises(KernelSignatureError, match="declared with different parameters"):
        parse_source('extern "C" __global__ void k(int* a);\nextern "C" __global__ void k(float* a) {}\n')
    (tmp_path / "a.cu").write_text('extern "C" __global__ void same(int* a) {}\n')
    (tmp_path / "b.cu").write_text('\n\nextern "C" __global__ void same(int* a) {}\n')
    with pytest.raises(KernelSignatureError, match=r"b\.cu:3: kernel same is also defined at .*a\.cu:1"):
        kernel_sig.parse_dir(str(tmp_path))


def test_every_source_parses_and_matches_the_built_emulation():
    """The loader's parser and the registry the emulation was built from agree."""
    for lib in (kernels.default_library(), kernels.Library(kernels.TEST_KERNEL_DIR, "convnet._emu_test")):
        sigs = lib.signatures()
        try:
            emu = kernels._load_emu(lib.emu_module)
        except kernels.EmulationNotBuilt:
            pytest.skip("emulation not built")
        built = emu.kernels()
        for name, sig in sigs.items():
            if name in built:   # a kernel added since the last make is the loader's business (stale error)
                assert built[name] == [p.ctype for p in sig.params], name


def test_generator_writes_thunks_and_rejects_bad_kernels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.cu").write_text('extern "C" __global__ void ka(const float* __restrict__ x, unsigned n) {}\n')
    out = tmp_path / "reg.cpp"
    gen = [sys.executable, os.path.join(ROOT, "bindings", "gen_registry.py")]
    r = subprocess.run(gen + [str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'extern "C" void ka(const float*, unsigned int);' in text
    assert "ka(*reinterpret_cast<const float**>(a[0]), *reinterpret_cast<unsigned int*>(a[1]))" in text
    assert '{"const float*", "unsigned int"}' in text and "cn_emu_registry_size = 1;" in text
    (src / "b.cu").write_text('\n\nextern "C" __global__ void kb(double* x) {}\n')
    r = subprocess.run(gen + [str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "b.cu:3: kernel kb: parameter 0 'x' has type 'double *'" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(gen + [str(out), str(empty)], capture_output=True, text=True)
    assert r.returncode == 0 and "cn_emu_registry_size = 0;" in out.read_text()


# ---- the emulation side of the loader ------------------------------------------------------
def test_missing_extension_says_run_make():
    with pytest.raises(kernels.EmulationNotBuilt, match="the CPU emulation is not built: run make"):
        kernels._load_emu("convnet._emu_not_there")


def test_stale_emulation_says_run_make(tmp_path):
    src = open(os.path.join(kernels.TEST_KERNEL_DIR, "basic.cu")).read()
    lib_dir = tmp_path / "k"
    lib_dir.mkdir()
    (lib_dir / "basic.cu").write_text(src)
    future = os.path.getmtime(kernels._load_emu("convnet._emu_test").__file__) + 100
    os.utime(lib_dir / "basic.cu", (future, future))
    lib = kernels.Library(str(lib_dir), "convnet._emu_test", fatbin_dir=None)
    with pytest.raises(kernels.EmulationNotBuilt, match=r"kernel test_coords: the emulation .* is older than .*basic\.cu: run make"):
        lib.get_function("test_coords", like="emu")
    (lib_dir / "basic.cu").write_text(src + '\nextern "C" __global__ void test_brand_new(int* x) {}\n')
    os.utime(lib_dir / "basic.cu", (1, 1))
    lib = kernels.Library(str(lib_dir), "convnet._emu_test", fatbin_dir=None)
    with pytest.raises(kernels.EmulationNotBuilt, match="kernel test_brand_new .* is not in the built emulation"):
        lib.get_function("test_brand_new", like="emu")
    (lib_dir / "basic.cu").write_text(src.replace("unsigned int* __restrict__ out, int n", "int* out, int n"))
    os.utime(lib_dir / "basic.cu", (1, 1))
    lib = kernels.Library(str(lib_dir), "convnet._emu_test", fatbin_dir=None)
    with pytest.raises(kernels.EmulationNotBuilt, match=r"kernel test_coords: the built emulation has parameters"):
        lib.get_function("test_coords", like="emu")


def test_functions_are_cached_per_backend():
    lib = kernels.Library(kernels.TEST_KERNEL_DIR, "convnet._emu_test")
    a = lib.get_function("test_coords", like="emu")
    assert lib.get_function("test_coords", like=np.zeros(1)) is a
    assert "test_coords(unsigned int*, int) on emu" in repr(a)
    with pytest.raises(TypeError, match="like must be a NumPy or CuPy array"):
        lib.get_function("test_coords", like=[1, 2])


def test_available_backends():
    assert ("emu" in kernels.available_backends()) == kernels.emulation_available()
    assert ("cuda" in kernels.available_backends()) == kernels.gpu_available()


# ---- fatbin or NVRTC ------------------------------------------------------------------------------
def test_fatbin_staleness_by_mtime(tmp_path):
    cu, cuh, fb = tmp_path / "x.cu", tmp_path / "common.cuh", tmp_path / "x.fatbin"
    for p in (cu, cuh):
        p.write_text("")
    assert kernels.fatbin_is_stale(str(fb), str(cu), [str(cuh)])          # missing
    fb.write_text("")
    os.utime(cu, (100, 100))
    os.utime(cuh, (100, 100))
    os.utime(fb, (200, 200))
    assert not kernels.fatbin_is_stale(str(fb), str(cu), [str(cuh)])      # newer than both
    os.utime(cu, (300, 300))
    assert kernels.fatbin_is_stale(str(fb), str(cu), [str(cuh)])          # the .cu changed
    os.utime(cu, (100, 100))
    os.utime(cuh, (300, 300))
    assert kernels.fatbin_is_stale(str(fb), str(cu), [str(cuh)])          # a header changed


class _FakeCupy:
    """Just enough of CuPy for the loader's GPU path: records what it is asked."""

    def __init__(self):
        self.modules = []
        self.calls = []
        self.current = 0
        fake = self

        class Device:
            def __init__(self, i=None):
                self.id = fake.current if i is None else i

            def __enter__(self):
                self.prev, fake.current = fake.current, self.id
                return self

            def __exit__(self, *a):
                fake.current = self.prev

        class RawKernel:
            def __init__(self, name):
                self.name = name
                self.max_dynamic_shared_size_bytes = 0

            def __call__(self, grid, block, args, shared_mem=0):
                fake.calls.append((self.name, grid, block, args, shared_mem, self.max_dynamic_shared_size_bytes,
                                   fake.current))

        class RawModule:
            def __init__(self, **kw):
                self.kw = kw
                self.device = fake.current
                fake.modules.append(self)

            def get_function(self, name):
                return RawKernel(name)

        self.RawModule = RawModule
        self.cuda = types.SimpleNamespace(Device=Device,
                                          runtime=types.SimpleNamespace(getDeviceCount=lambda: 2))


class _FakeArray:
    __module__ = "cupy._core.core"

    def __init__(self, a, device=0):
        self.a = a
        self.dtype = a.dtype
        self.flags = a.flags
        self.device = types.SimpleNamespace(id=device)


@pytest.fixture
def fake_cupy(monkeypatch):
    fake = _FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(kernels, "_gpu", True)
    return fake


def _lib_with_fatbin(tmp_path, fresh):
    src = tmp_path / "k"
    src.mkdir()
    (src / "basic.cu").write_text(open(os.path.join(kernels.TEST_KERNEL_DIR, "basic.cu")).read())
    fat = tmp_path / "fat"
    fat.mkdir()
    (fat / "basic.fatbin").write_text("")
    os.utime(src / "basic.cu", (100, 100))
    newest_header = max(os.path.getmtime(os.path.join(kernels.KERNEL_DIR, f))
                        for f in os.listdir(kernels.KERNEL_DIR) if f.endswith(".cuh"))
    t = newest_header + 100 if fresh else 50   # headers count too
    os.utime(fat / "basic.fatbin", (t, t))
    return kernels.Library(str(src), "convnet._emu_test", fatbin_dir=str(fat)), fat


def test_gpu_path_loads_a_fresh_fatbin(tmp_path, fake_cupy):
    lib, fat = _lib_with_fatbin(tmp_path, fresh=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = lib.get_function("test_axpb", like=_FakeArray(np.zeros(1, np.float32), device=1))
    assert f.backend == "cuda" and f.device == 1
    (m,) = fake_cupy.modules
    assert m.kw == {"path": str(fat / "basic.fatbin")} and m.device == 1
    x, y, echo = (_FakeArray(np.zeros(4, np.float32), 1), _FakeArray(np.zeros(4, np.float32), 1),
                  _FakeArray(np.zeros(3, np.uint64), 1))
    f(2, (32, 2), (x, y, 4, 0.5, 3, 2**64 - 1, 7, echo))
    name, grid, block, args, smem, limit, dev = fake_cupy.calls[-1]
    assert (name, grid, block, smem, dev) == ("test_axpb", (2, 1, 1), (32, 2, 1), 0, 1)
    assert args[0] is x and args[1] is y and args[7] is echo
    assert [type(a) for a in args[2:7]] == [np.int32, np.float32, np.uint32, np.uint64, np.uint8]
    assert args[5] == 2**64 - 1
    f(1, 32, (x, y, 4, 0.5, 3, 1, 7, echo), shared_mem=100_000)   # above 48 KiB: opt in first
    assert fake_cupy.calls[-1][4:6] == (100_000, 100_000)
    with pytest.raises(ValueError, match="the array is on GPU 0, the kernel on GPU 1"):
        f(1, 32, (_FakeArray(np.zeros(4, np.float32), 0), y, 4, 0.5, 3, 1, 7, echo))
    with pytest.raises(TypeError, match=r"parameter 0 'x' \(const float\*\) expects a CuPy array, got numpy.ndarray"):
        f(1, 32, (np.zeros(4, np.float32), y, 4, 0.5, 3, 1, 7, echo))
    with pytest.raises(TypeError, match="expects dtype float32, got int32"):
        f(1, 32, (_FakeArray(np.zeros(4, np.int32), 1), y, 4, 0.5, 3, 1, 7, echo))
    # one module per file and device: another kernel of the same file reuses it
    lib.get_function("test_coords", like=_FakeArray(np.zeros(1), device=1))
    assert len(fake_cupy.modules) == 1
    lib.get_function("test_coords", like=_FakeArray(np.zeros(1), device=0))
    assert len(fake_cupy.modules) == 2 and fake_cupy.modules[1].device == 0


def test_gpu_path_compiles_with_nvrtc_when_the_fatbin_is_stale(tmp_path, fake_cupy):
    lib, fat = _lib_with_fatbin(tmp_path, fresh=False)
    with pytest.warns(RuntimeWarning, match=r"basic\.fatbin is older than its sources: compiling basic\.cu with NVRTC"):
        lib.get_function("test_axpb", like="cuda")
    (m,) = fake_cupy.modules
    assert m.kw["backend"] == "nvrtc" and "extern \"C\" __global__ void test_axpb" in m.kw["code"]
    assert m.kw["options"][0] == "-std=c++17"
    assert "// headers: " in m.kw["code"]   # CuPy's cache key changes with the headers
    assert f"-I{lib.source_dir}" in m.kw["options"] and f"-I{kernels.KERNEL_DIR}" in m.kw["options"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # warned once per file
        lib.get_function("test_coords", like=_FakeArray(np.zeros(1), device=1))
    # an edited header changes the code CuPy sees (its cache key)
    with open(os.path.join(lib.source_dir, "extra.cuh"), "w") as f:
        f.write("#define EXTRA 1\n")
    lib2 = kernels.Library(lib.source_dir, "convnet._emu_test", fatbin_dir=None)
    lib2.get_function("test_axpb", like="cuda")
    assert fake_cupy.modules[-1].kw["code"] != m.kw["code"]


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "_gpu", False)
    with pytest.raises(RuntimeError, match="backend 'cuda' asked for but no GPU is available"):
        kernels.get_function("relu_fwd", like="cuda")


# ---- on a real GPU ----------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_test_kernels_agree_with_the_emulation():
    """The emulation's semantics (shuffles, votes, barriers, atomics) against the hardware."""
    import cupy
    gpu = kernels.Library(kernels.TEST_KERNEL_DIR, "convnet._emu_test", fatbin_dir=None)
    emu = kernels.Library(kernels.TEST_KERNEL_DIR, "convnet._emu_test")
    rng = np.random.default_rng(0)
    v = rng.integers(-1000, 1000, 96).astype(np.int32)
    for kind in range(4):
        for arg, width in [(1, 32), (3, 8), (7, 16), (5, 32)]:
            outs = []
            for lib, xp in ((gpu, cupy), (emu, np)):
                out = xp.zeros(96, xp.int32)
                lib.get_function("test_shfl", like=out)(1, 96, (xp.asarray(v), out, kind, arg, width))
                outs.append(cupy.asnumpy(out) if xp is cupy else out)
            np.testing.assert_array_equal(outs[0], outs[1])
    pred = (rng.random(64) < 0.5).astype(np.int32)
    outs = []
    for lib, xp in ((gpu, cupy), (emu, np)):
        out = xp.zeros((64, 4), xp.uint32)
        lib.get_function("test_vote", like=out)(1, 64, (xp.asarray(pred), out))
        outs.append(cupy.asnumpy(out) if xp is cupy else out)
    np.testing.assert_array_equal(outs[0], outs[1])
    x = rng.standard_normal((45, 70)).astype(np.float32)
    y = cupy.zeros((70, 45), cupy.float32)
    gpu.get_function("test_transpose", like=y)((3, 2), (32, 8), (cupy.asarray(x), y, 45, 70, 1))
    np.testing.assert_array_equal(cupy.asnumpy(y), x.T)
    n = 50_000
    xs = rng.random(n).astype(np.float32)
    s = cupy.zeros(1, cupy.float32)
    gpu.get_function("test_atomic_sum", like=s)((n + 255) // 256, 256, (cupy.asarray(xs), s, n))
    assert float(s[0]) == pytest.approx(float(xs.astype(np.float64).sum()), rel=1e-4)
    out = cupy.zeros(256, cupy.float32)
    gpu.get_function("test_block_sum", like=out)(1, 256, (cupy.asarray(xs[:256]), out, 256, 1), shared_mem=64 * 1024)
    assert float(out[0]) == pytest.approx(float(xs[:256].astype(np.float64).sum()), rel=1e-5)


@pytest.mark.gpu
def test_gpu_shipped_kernels_load_from_fatbin_and_nvrtc():
    import cupy
    x = cupy.asarray(np.random.default_rng(1).standard_normal(1000).astype(np.float32))
    y = cupy.empty_like(x)
    kernels.get_function("relu_fwd", like=x)(4, 256, (x, y, x.size))
    np.testing.assert_array_equal(cupy.asnumpy(y), np.maximum(cupy.asnumpy(x), 0))
    nvrtc = kernels.Library(fatbin_dir=None)    # every kernels/*.cu compiles with NVRTC too
    for name, sig in nvrtc.signatures().items():
        nvrtc._cuda_launcher(sig, x.device.id)
