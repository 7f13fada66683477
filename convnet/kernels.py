"""The one loader of the CUDA kernels in kernels/*.cu, for the GPU and the CPU emulation.

    from convnet import kernels
    k = kernels.get_function("lrn_fwd", like=x)   # x: NumPy -> emulation, CuPy -> its GPU
    k(grid, block, (x, y, n, c, hw, size, alpha, beta, kk), shared_mem=0)

`like` is a NumPy array (the emulation; an EmuArray of convnet.backend names
its emulated device, and every array of the launch must then be on it), a
CuPy array (the GPU holding it), or one of the strings "emu" and "cuda" (the
current GPU). grid and block are
ints or tuples of up to three ints. args follow the kernel's C signature,
parsed from its source (convnet/kernel_sig.py, the parser the emulation's
registry is generated with): an array per pointer parameter (C-contiguous,
of the parameter's dtype, writable unless the pointer is const) and a number
per scalar (converted to the parameter's type, range checked). The call is the
same on both backends.

GPU: one cupy.RawModule per .cu file and device, loaded from
build/kernels/NAME.fatbin (the Makefile's nvcc rule) or, when that is missing
or older than its .cu or a kernels/*.cuh, compiled from the same source with
NVRTC (with a warning, once per file). Emulation: convnet._emu, built by
`make` (bindings/); CONVNET_EMU_DIR=DIR loads the extensions from DIR instead
(e.g. build/asan/convnet, the AddressSanitizer build).
"""
import glob
import hashlib
import importlib
import importlib.util
import numbers
import os
import sys
import threading
import warnings

import numpy as np

from convnet.kernel_sig import KernelSignatureError, parse_dir  # noqa: F401  (re-exported)

PKG = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PKG)
# In a checkout: kernels/ and build/kernels/; in an installed package (setup.py)
# the same files are copied to convnet/_kernels/ and convnet/_fatbin/.
_IN_CHECKOUT = os.path.isdir(os.path.join(ROOT, "kernels"))
KERNEL_DIR = os.environ.get("CONVNET_KERNEL_DIR",
                            os.path.join(ROOT, "kernels") if _IN_CHECKOUT else os.path.join(PKG, "_kernels"))
FATBIN_DIR = os.path.join(ROOT, "build", "kernels") if _IN_CHECKOUT else os.path.join(PKG, "_fatbin")
TEST_KERNEL_DIR = os.path.join(ROOT, "tests", "emu_kernels")
# the emulation's own sources: an extension older than any of them is stale
EMU_SOURCES = [os.path.join(ROOT, "bindings", f) for f in ("cuda_emu.h", "emu_runtime.cpp", "emu_module.cpp")]

MAX_THREADS_PER_BLOCK = 1024
DEFAULT_SHARED_LIMIT = 48 * 1024   # above this a kernel must opt in (CUDA)
_INT_RANGES = {
    "int": (-2**31, 2**31 - 1),
    "unsigned int": (0, 2**32 - 1),
    "unsigned char": (0, 255),
    "unsigned long long": (0, 2**64 - 1),
}


class EmulationNotBuilt(RuntimeError):
    pass


def _is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


_gpu = None


def gpu_available():
    """True when CuPy imports and sees at least one GPU."""
    global _gpu
    if _gpu is None:
        try:
            import cupy
            _gpu = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:
            _gpu = False
    return _gpu


def emulation_available(module="convnet._emu"):
    try:
        _load_emu(module)
        return True
    except EmulationNotBuilt:
        return False


def available_backends():
    """The kernel backends usable here: "emu" when the emulation is built, "cuda" with a GPU."""
    out = []
    if emulation_available():
        out.append("emu")
    if gpu_available():
        out.append("cuda")
    return out


# ---- the emulation extension -------------------------------------------------
_emu_modules = {}
_lock = threading.RLock()


def _load_emu(module):
    """convnet._emu (or convnet._emu_test), from CONVNET_EMU_DIR when set."""
    with _lock:
        if module in _emu_modules:
            return _emu_modules[module]
        emu_dir = os.environ.get("CONVNET_EMU_DIR")
        try:
            if emu_dir:
                short = module.rsplit(".", 1)[-1]
                paths = glob.glob(os.path.join(emu_dir, short + ".*.so")) + \
                    glob.glob(os.path.join(emu_dir, short + ".so"))
                if not paths:
                    raise ImportError(f"no {short} extension in CONVNET_EMU_DIR={emu_dir}")
                if module in sys.modules and getattr(sys.modules[module], "__file__", None) != paths[0]:
                    raise ImportError(f"{module} is already loaded from {sys.modules[module].__file__}")
                spec = importlib.util.spec_from_file_location(module, paths[0])
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
                sys.modules[module] = mod
            else:
                mod = importlib.import_module(module)
        except ImportError as e:
            raise EmulationNotBuilt(f"the CPU emulation is not built: run make ({module}: {e})") from None
        _emu_modules[module] = mod
        return mod


# ---- argument conversion -----------------------------------------------------------
def _dims(value, what, kernel):
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        dims = (int(value),)
    elif isinstance(value, (tuple, list)) and 1 <= len(value) <= 3 and all(
            isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in value):
        dims = tuple(int(v) for v in value)
    else:
        raise TypeError(f"kernel {kernel}: {what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"kernel {kernel}: {what} dimensions must be >= 1, got {value!r}")
    return dims + (1,) * (3 - len(dims))


def _check_launch(kernel, grid, block, shared_mem):
    g, b = _dims(grid, "grid", kernel), _dims(block, "block", kernel)
    if b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK or b[2] > 64:
        raise ValueError(f"kernel {kernel}: block {b} has {b[0] * b[1] * b[2]} threads; "
                         f"at most {MAX_THREADS_PER_BLOCK} (and z <= 64)")
    if g[0] > 2**31 - 1 or g[1] > 65535 or g[2] > 65535:
        raise ValueError(f"kernel {kernel}: grid {g} over the limits (2^31-1, 65535, 65535)")
    if not isinstance(shared_mem, (numbers.Integral, np.integer)) or isinstance(shared_mem, bool) or shared_mem < 0:
        raise ValueError(f"kernel {kernel}: shared_mem must be an int >= 0, got {shared_mem!r}")
    return g, b, int(shared_mem)


def _pname(kernel, i, p):
    return f"kernel {kernel}: parameter {i}{' ' + repr(p.name) if p.name else ''} ({p.ctype})"


def _convert_scalar(kernel, i, p, v):
    """A Python number of the parameter's type, range checked."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{_pname(kernel, i, p)} expects a number, got a bool")
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if p.base == "float":
        if not isinstance(v, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{_pname(kernel, i, p)} expects a number, got {type(v).__name__}")
        f = float(v)
        with np.errstate(over="ignore"):
            f32 = np.float32(f)
        if np.isfinite(f) and not np.isfinite(f32):
            raise ValueError(f"{_pname(kernel, i, p)}: {f} does not fit in a float32")
        return float(f32)
    if not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{_pname(kernel, i, p)} expects an integer, got {type(v).__name__} {v!r}")
    lo, hi = _INT_RANGES[p.base]
    n = int(v)
    if not lo <= n <= hi:
        raise ValueError(f"{_pname(kernel, i, p)}: {n} is out of range [{lo}, {hi}]")
    return n


def _check_array(kernel, i, p, a, cuda):
    want = "a CuPy array" if cuda else "a NumPy array"
    if cuda != _is_cupy(a) or not (cuda or isinstance(a, np.ndarray)):
        raise TypeError(f"{_pname(kernel, i, p)} expects {want}, got {type(a).__module__}.{type(a).__name__}")
    if a.dtype != p.dtype:
        raise TypeError(f"{_pname(kernel, i, p)} expects dtype {p.dtype}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{_pname(kernel, i, p)}: the array must be C-contiguous")
    if not cuda and not p.const and not a.flags.writeable:
        raise ValueError(f"{_pname(kernel, i, p)}: the kernel writes through this pointer but the array is read-only")


class Kernel:
    """A kernel on one backend: k(grid, block, args, shared_mem=0)."""

    def __init__(self, sig, backend, launch, device=None):
        self.sig = sig
        self.name = sig.name
        self.backend = backend      # "emu" or "cuda"
        self.device = device        # GPU id for "cuda"; emulated device id (None: host arrays) for "emu"
        self._launch = launch

    @property
    def params(self):
        return self.sig.params

    def __repr__(self):
        where = f"cuda:{self.device}" if self.backend == "cuda" else (
            "emu" if self.device is None else f"emu{self.device}")
        return f"<Kernel {self.name}({', '.join(p.ctype for p in self.sig.params)}) on {where}>"

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block, shared_mem = _check_launch(self.name, grid, block, shared_mem)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {self.name}: args must be a tuple or list, got {type(args).__name__}")
        params = self.sig.params
        if len(args) != len(params):
            raise TypeError(f"kernel {self.name} takes {len(params)} arguments "
                            f"({', '.join(p.ctype for p in params)}), got {len(args)}")
        cuda = self.backend == "cuda"
        conv = []
        for i, (p, a) in enumerate(zip(params, args)):
            if p.pointer:
                _check_array(self.name, i, p, a, cuda)
                if cuda and a.device.id != self.device:
                    raise ValueError(f"{_pname(self.name, i, p)}: the array is on GPU {a.device.id}, "
                                     f"the kernel on GPU {self.device}")
                if not cuda and _emu_id(a) != self.device:
                    raise ValueError(f"{_pname(self.name, i, p)}: the array is on "
                                     f"{_emu_where(_emu_id(a))}, the kernel on {_emu_where(self.device)}")
                conv.append(a)
            else:
                v = _convert_scalar(self.name, i, p, a)
                conv.append(p.dtype.type(v) if cuda else v)
        self._launch(grid, block, conv, shared_mem)


# ---- libraries of kernels --------------------------------------------------------
def _show(path):
    """A path for a message: relative to the checkout when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def _mtime(path):
    try:
        return os.path.getmtime(path)
    except OSError:
        return None


def fatbin_is_stale(fatbin, source, headers):
    """True when the fatbin is missing or older than its source or any header."""
    t = _mtime(fatbin)
    if t is None:
        return True
    return any((_mtime(p) or 0) > t for p in [source, *headers])


class Library:
    """The kernels of one source directory: signatures, emulation, GPU modules.

    kernels/*.cu is the default library (get_function below); the emulation's
    own tests use Library(TEST_KERNEL_DIR, emu_module="convnet._emu_test").
    """

    def __init__(self, source_dir=KERNEL_DIR, emu_module="convnet._emu", fatbin_dir=FATBIN_DIR,
                 include_dirs=()):
        self.source_dir = source_dir
        self.emu_module = emu_module
        self.fatbin_dir = fatbin_dir
        self.include_dirs = tuple(include_dirs) + (source_dir, KERNEL_DIR)
        self._sigs = None
        self._functions = {}        # (name, backend, device) -> Kernel
        self._cuda_modules = {}     # (file, device) -> cupy.RawModule
        self._warned = set()

    def headers(self):
        hs = []
        for d in dict.fromkeys(self.include_dirs):
            hs += sorted(glob.glob(os.path.join(d, "*.cuh")))
        return hs

    def signatures(self):
        """{name: KernelSig} of every kernel in the source directory."""
        with _lock:
            if self._sigs is None:
                self._sigs = {s.name: s for s in parse_dir(self.source_dir)}
            return self._sigs

    def signature(self, name):
        sigs = self.signatures()
        if name not in sigs:
            raise ValueError(f"unknown kernel {name!r}: no extern \"C\" __global__ kernel of that name "
                             f"in {self.source_dir}/*.cu")
        return sigs[name]

    def get_function(self, name, like):
        backend, device = _resolve(like)
        key = (name, backend, device)
        with _lock:
            k = self._functions.get(key)
            if k is None:
                sig = self.signature(name)
                if backend == "emu":
                    k = Kernel(sig, "emu", self._emu_launcher(sig), device)
                else:
                    k = Kernel(sig, "cuda", self._cuda_launcher(sig, device), device)
                self._functions[key] = k
            return k

    # -- emulation
    def _emu_launcher(self, sig):
        emu = _load_emu(self.emu_module)
        built = emu.kernels()
        so = emu.__file__
        if sig.name not in built:
            raise EmulationNotBuilt(f"kernel {sig.name} ({sig.file}) is not in the built emulation {so}: run make")
        if built[sig.name] != [p.ctype for p in sig.params]:
            raise EmulationNotBuilt(f"kernel {sig.name}: the built emulation has parameters {built[sig.name]}, "
                                    f"the source {[p.ctype for p in sig.params]}: run make")
        t = _mtime(so)
        newer = [p for p in [sig.file, *self.headers(), *EMU_SOURCES] if (_mtime(p) or 0) > t]
        if newer:
            raise EmulationNotBuilt(f"kernel {sig.name}: the emulation {_show(so)} is older "
                                    f"than {_show(newer[0])}: run make")
        name = sig.name

        def launch(grid, block, args, shared_mem):
            emu.launch(name, grid, block, shared_mem,
                       [a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a for a in args])
        return launch

    # -- GPU
    def _cuda_module(self, source, device):
        import cupy
        key = (source, device)
        mod = self._cuda_modules.get(key)
        if mod is not None:
            return mod
        stem = os.path.splitext(os.path.basename(source))[0]
        fatbin = os.path.join(self.fatbin_dir, stem + ".fatbin") if self.fatbin_dir else None
        with cupy.cuda.Device(device):
            if fatbin and not fatbin_is_stale(fatbin, source, self.headers()):
                mod = cupy.RawModule(path=fatbin)
            else:
                if fatbin and source not in self._warned:
                    self._warned.add(source)
                    why = "missing" if _mtime(fatbin) is None else "older than its sources"
                    warnings.warn(f"{_show(fatbin)} is {why}: compiling {os.path.basename(source)} "
                                  "with NVRTC (run make to build the fatbins)", RuntimeWarning, stacklevel=4)
                with open(source, encoding="utf-8") as f:
                    code = f.read()
                # CuPy caches compiled code by its text: name the headers' contents in it,
                # or an edited .cuh would reuse the old binary.
                digest = hashlib.sha1()
                for h in self.headers():
                    with open(h, "rb") as f:
                        digest.update(f.read())
                code += f"\n// headers: {digest.hexdigest()}\n"
                options = ("-std=c++17",) + tuple(f"-I{d}" for d in dict.fromkeys(self.include_dirs))
                mod = cupy.RawModule(code=code, options=options, backend="nvrtc")
        self._cuda_modules[key] = mod
        return mod

    def _cuda_launcher(self, sig, device):
        import cupy
        mod = self._cuda_module(sig.file, device)
        with cupy.cuda.Device(device):
            fn = mod.get_function(sig.name)
        state = {"smem_limit": DEFAULT_SHARED_LIMIT}

        def launch(grid, block, args, shared_mem):
            with cupy.cuda.Device(device):
                if shared_mem > state["smem_limit"]:
                    fn.max_dynamic_shared_size_bytes = shared_mem
                    state["smem_limit"] = shared_mem
                fn(grid, block, tuple(args), shared_mem=shared_mem)
        return launch


def _emu_id(a):
    """The emulated device of a NumPy array: its id for an EmuArray, None for host memory."""
    return getattr(a, "_emu_id", None)


def _emu_where(device):
    return "the host" if device is None else f"emulated device {device}"


def _resolve(like):
    """(backend, device) for a `like` argument: the GPU of a CuPy array, the emulated
    device of an EmuArray (convnet.backend), None for a host NumPy array."""
    if isinstance(like, str):
        if like == "emu":
            return "emu", None
        if like == "cuda":
            if not gpu_available():
                raise RuntimeError("backend 'cuda' asked for but no GPU is available (CuPy finds none)")
            import cupy
            return "cuda", cupy.cuda.Device().id
        raise ValueError(f"like must be an array, 'emu' or 'cuda', got {like!r}")
    if isinstance(like, np.ndarray):
        return "emu", _emu_id(like)
    if _is_cupy(like):
        return "cuda", like.device.id
    raise TypeError(f"like must be a NumPy or CuPy array, 'emu' or 'cuda', got {type(like).__name__}")


_default = None


def default_library():
    global _default
    with _lock:
        if _default is None:
            _default = Library()
        return _default


def get_function(name, like):
    """The kernel `name` of kernels/*.cu on the backend of `like`, cached per device."""
    return default_library().get_function(name, like)


def signatures():
    """{name: KernelSig} of kernels/*.cu."""
    return default_library().signatures()


def emulation_settings():
    """threads, order, stack size, ... of the emulation (convnet._emu.settings())."""
    return _load_emu("convnet._emu").settings()
