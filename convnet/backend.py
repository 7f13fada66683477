"""Devices: where arrays live and where ops run, chosen once at the command line.

    from convnet import backend
    dev = backend.cpu()             # the host: NumPy, the reference ops (the CPU training path)
    dev = backend.emu(1)            # emulated device 1: the CUDA kernels on the CPU emulation
    dev = backend.cuda(0)           # GPU 0: CuPy arrays, the CUDA kernels
    devs = backend.parse("emu:0,1") # what --device/--gpus name, as a list of devices
    backend.of(x)                   # the device an array lives on

A device object owns its array module (`dev.xp`), whether ops on it run our
kernels (`dev.runs_kernels`), its streams (`dev.new_stream()`), the copies to
and from it (`dev.asarray`, `dev.to_host`, `dev.receive`) and a context that
makes it current (`with dev.context(stream): ...`). There is one object per
device: `backend.emu(1) is backend.emu(1)`.

Emulated devices behave like GPUs where it matters for correctness. Their
arrays are `EmuArray`s, NumPy arrays that carry `.device` (with `.id`, as a
CuPy array does). As in CuPy, a new array (an allocation, a copy, the result
of an elementwise op) lands on the *current* device; an op whose arrays are
not on the current device, or a kernel given arrays of two devices, raises;
and an array reaches another device only through `receive` (the "emulated
peer copy" of convnet.devices.Placement) or `asarray`. So code that runs
correctly on two emulated devices puts every array where the GPU path would.
"""
import contextlib
import threading

import numpy as np

KINDS = ("cpu", "emu", "cuda")


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


# --- emulated device arrays ------------------------------------------------------------

_state = threading.local()


def current_emu_id():
    """The current emulated device of this thread (0 unless inside `emu(i).context()`)."""
    return getattr(_state, "emu", 0)


def _emu_error(a_id, cur, what="an array"):
    return ValueError(f"{what} is on emulated device {a_id} but the current device is {cur}: "
                      "make its device current (device.context()) or copy it there")


class EmuArray(np.ndarray):
    """A NumPy array on an emulated device: `.device.id`, as a CuPy array's."""

    def __array_finalize__(self, obj):
        # A view keeps its base's device; anything newly allocated is on the current one.
        if isinstance(obj, EmuArray) and self.base is not None:
            self._emu_id = getattr(obj, "_emu_id", current_emu_id())
        else:
            self._emu_id = current_emu_id()

    @property
    def device(self):
        return emu(self._emu_id)

    def get(self):
        """A host NumPy copy (as cupy.ndarray.get)."""
        return np.array(self, copy=True, subok=False)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        cur = current_emu_id()
        for a in inputs + (out or ()):
            if isinstance(a, EmuArray) and a._emu_id != cur:
                raise _emu_error(a._emu_id, cur, f"{ufunc.__name__}: an operand")
        args = [a.view(np.ndarray) if isinstance(a, EmuArray) else a for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, EmuArray) else o for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        cur = current_emu_id()
        for a in _flat(args) + _flat(tuple(kwargs.values())):
            if isinstance(a, EmuArray) and a._emu_id != cur:
                raise _emu_error(a._emu_id, cur, f"{func.__name__}: an operand")
        return _wrap(super().__array_function__(func, types, args, kwargs))

    def __repr__(self):
        return f"{np.asarray(self)!r} on emu{self._emu_id}"


def _flat(items):
    out = []
    for a in items:
        if isinstance(a, (list, tuple)):
            out.extend(_flat(a))
        else:
            out.append(a)
    return out


def _wrap(result):
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if type(result) is np.ndarray:
        return result.view(EmuArray)        # a new array: on the current device
    return result


class _EmuModule:
    """The array module of the emulated devices (as `cupy` for GPUs): allocations go to
    the current emulated device; anything else is NumPy's."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def _new(a):
        return np.asarray(a).view(EmuArray)

    def empty(self, shape, dtype=np.float64, order="C"):
        return self._new(np.empty(shape, dtype, order))

    def zeros(self, shape, dtype=np.float64, order="C"):
        return self._new(np.zeros(shape, dtype, order))

    def ones(self, shape, dtype=np.float64, order="C"):
        return self._new(np.ones(shape, dtype, order))

    def full(self, shape, fill_value, dtype=None, order="C"):
        return self._new(np.full(shape, fill_value, dtype, order))

    def empty_like(self, a, dtype=None):
        return self.empty(np.shape(a), dtype or a.dtype)

    def zeros_like(self, a, dtype=None):
        return self.zeros(np.shape(a), dtype or a.dtype)

    def asarray(self, a, dtype=None):
        """a on the current device: itself when already there (and of that dtype), else a copy
        (a host array, or the same device's array in another dtype)."""
        if isinstance(a, EmuArray):
            cur = current_emu_id()
            if a._emu_id != cur:
                raise _emu_error(a._emu_id, cur)
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return self._new(np.array(a, dtype=dtype, copy=True))

    def ascontiguousarray(self, a, dtype=None):
        a = self.asarray(a, dtype)
        return a if a.flags.c_contiguous else a.copy()


emu_xp = _EmuModule()


# --- devices -------------------------------------------------------------------------------

class Device:
    """Base: the host. Subclasses: EmuDevice, CudaDevice."""

    kind = "cpu"
    runs_kernels = False        # ops run convnet.reference (False) or our kernels (True)
    id = None

    @property
    def xp(self):
        return np

    @property
    def name(self):
        return "cpu"

    def __repr__(self):
        return f"<device {self.name}>"

    @contextlib.contextmanager
    def context(self, stream=None):
        """This device (and `stream`) current inside the block."""
        yield

    def new_stream(self):
        """A stream of this device for one column's work (None where there are no streams)."""
        return None

    def owns(self, a):
        """True when `a` lives on this device."""
        return isinstance(a, np.ndarray) and not isinstance(a, EmuArray)

    def to_host(self, a):
        """a as a NumPy array on the host (no copy where it is one already)."""
        return to_host(a)

    def asarray(self, x, dtype=None, stream=None):
        """x (host, or any device's array) as a C-contiguous array on this device."""
        return np.ascontiguousarray(to_host(x), dtype=dtype)

    def copy_kind(self, src):
        """How an array comes here from device `src`."""
        return "host"

    def receive(self, x, src, src_stream=None, dst_stream=None, keep=None):
        """A copy of x (on device src, produced on src_stream) on this device, ordered on
        dst_stream. `keep`: a list that must hold x until the copy is done."""
        return np.array(x, copy=True)

    def synchronize(self):
        pass


class EmuDevice(Device):
    """Emulated device `id`: EmuArrays, the CUDA kernels on the CPU emulation."""

    kind = "emu"
    runs_kernels = True

    def __init__(self, id):
        self.id = int(id)

    @property
    def xp(self):
        return emu_xp

    @property
    def name(self):
        return f"emu{self.id}"

    @contextlib.contextmanager
    def context(self, stream=None):
        old = current_emu_id()
        _state.emu = self.id
        try:
            yield
        finally:
            _state.emu = old

    def owns(self, a):
        if isinstance(a, EmuArray):
            return a._emu_id == self.id
        return isinstance(a, np.ndarray)        # host memory: the emulation reads it directly

    def asarray(self, x, dtype=None, stream=None):
        host = to_host(x) if not (isinstance(x, EmuArray) and x._emu_id == self.id) else x
        with self.context():
            return emu_xp.ascontiguousarray(host, dtype)

    def copy_kind(self, src):
        return "same device" if src is self else "emulated peer copy"

    def receive(self, x, src, src_stream=None, dst_stream=None, keep=None):
        with self.context():
            out = emu_xp.empty(x.shape, x.dtype)
        np.copyto(out.view(np.ndarray), np.asarray(x))
        return out


class CudaDevice(Device):
    """GPU `id` (CuPy arrays, the CUDA kernels)."""

    kind = "cuda"
    runs_kernels = True

    def __init__(self, id):
        import cupy
        self.id = int(id)
        self._cupy = cupy
        self._peer = {}

    @property
    def xp(self):
        return self._cupy

    @property
    def name(self):
        return f"gpu{self.id}"

    @contextlib.contextmanager
    def context(self, stream=None):
        with self._cupy.cuda.Device(self.id):
            if stream is None:
                yield
            else:
                with stream:
                    yield

    def new_stream(self):
        # blocking streams: they also synchronize with the legacy default stream
        with self._cupy.cuda.Device(self.id):
            return self._cupy.cuda.Stream(non_blocking=False)

    def owns(self, a):
        return isinstance(a, self._cupy.ndarray) and a.device.id == self.id

    def asarray(self, x, dtype=None, stream=None):
        """A CuPy x is taken as ready once the current stream of its device has finished with
        it: `stream` (or the current stream) waits for an event recorded there."""
        cupy = self._cupy
        if isinstance(x, cupy.ndarray):
            with x.device:
                ready = cupy.cuda.get_current_stream().record()
                if x.device.id != self.id:             # another GPU: a synchronous copy
                    ready.synchronize()
                    x = cupy.ascontiguousarray(x)
                    with self.context():
                        out = cupy.empty(x.shape, dtype=x.dtype)
                        cupy.cuda.runtime.memcpyPeer(out.data.ptr, self.id, x.data.ptr, x.device.id, x.nbytes)
                    x = out
            with self.context(stream):
                cupy.cuda.get_current_stream().wait_event(ready)
                return cupy.ascontiguousarray(x, dtype=dtype)
        with self.context(stream):
            return cupy.ascontiguousarray(cupy.asarray(np.asarray(x), dtype=dtype))

    def can_peer(self, src):
        """True when this GPU can read GPU src's memory directly; enables peer access once."""
        if src.id not in self._peer:
            rt = self._cupy.cuda.runtime
            ok = bool(rt.deviceCanAccessPeer(self.id, src.id))
            if ok:
                with self.context():
                    try:
                        rt.deviceEnablePeerAccess(src.id)
                    except rt.CUDARuntimeError as e:    # already enabled (by us or by CuPy)
                        if "PeerAccessAlreadyEnabled" not in str(e):
                            ok = False
            self._peer[src.id] = ok
        return self._peer[src.id]

    def copy_kind(self, src):
        if src is self:
            return "same device"
        return "peer-to-peer" if self.can_peer(src) else "staged"

    def receive(self, x, src, src_stream=None, dst_stream=None, keep=None):
        """1. an event recorded on src_stream, waited for by dst_stream; 2. the copy on
        dst_stream (peer-to-peer, device-to-device, or staged through the host); 3. x kept in
        `keep` until the caller knows the copy is done (CuPy's pool would otherwise hand its
        memory to the next allocation on src_stream while dst_stream still reads it)."""
        cupy = self._cupy
        rt = cupy.cuda.runtime
        kind = self.copy_kind(src)
        with src.context(src_stream):
            x = cupy.ascontiguousarray(x)
            if kind == "staged":
                host = cupy.asnumpy(x, stream=src_stream)
                if src_stream is not None:
                    src_stream.synchronize()
            else:
                ready = cupy.cuda.get_current_stream().record()
                if keep is not None:
                    keep.append(x)
        with self.context(dst_stream):
            stream = cupy.cuda.get_current_stream()
            out = cupy.empty(x.shape, dtype=x.dtype)
            if kind == "staged":
                out.set(host, stream=stream)
            else:
                stream.wait_event(ready)
                if kind == "peer-to-peer":
                    rt.memcpyPeerAsync(out.data.ptr, self.id, x.data.ptr, src.id, x.nbytes, stream.ptr)
                else:
                    rt.memcpyAsync(out.data.ptr, x.data.ptr, x.nbytes, rt.memcpyDeviceToDevice, stream.ptr)
        return out

    def synchronize(self):
        with self.context():
            self._cupy.cuda.Device(self.id).synchronize()


# --- the device objects ------------------------------------------------------------------------

_CPU = Device()
_devices = {}
_lock = threading.Lock()


def cpu():
    """The host (NumPy; ops run convnet.reference)."""
    return _CPU


def emu(i=0):
    """Emulated device i (the CUDA kernels on the CPU emulation)."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise ValueError(f"an emulated device id must be an int >= 0, got {i!r}")
    with _lock:
        key = ("emu", int(i))
        if key not in _devices:
            _devices[key] = EmuDevice(i)
        return _devices[key]


def gpu_count():
    """CUDA devices CuPy sees (0 without CuPy, a driver or a device)."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:           # no CuPy, no driver, no device all mean "no GPU"
        return 0


def cuda(i=0):
    """GPU i (CuPy)."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
        raise ValueError(f"a GPU id must be an int >= 0, got {i!r}")
    with _lock:
        key = ("cuda", int(i))
        if key not in _devices:
            n = gpu_count()
            if n == 0:
                raise ValueError("no CUDA GPU found (CuPy sees none)")
            if i >= n:
                raise ValueError(f"GPU {i} requested but {n} GPU(s) found")
            _devices[key] = CudaDevice(i)
        return _devices[key]


def parse(spec):
    """'cpu' | 'emu' | 'emu:0,1' | 'cuda' | 'cuda:0,1' -> a list of devices."""
    if isinstance(spec, Device):
        return [spec]
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(d, Device) for d in spec):
            raise ValueError(f"devices must be a non-empty list of convnet.backend devices, got {spec!r}")
        return list(spec)
    if not isinstance(spec, str):
        raise TypeError(f"a device spec is a string like 'emu:0,1' or a device, got {spec!r}")
    kind, _, ids = spec.partition(":")
    if kind == "numpy":
        kind = "cpu"
    if kind not in KINDS:
        raise ValueError(f"unknown device {spec!r}: choose cpu, emu[:ids] or cuda[:ids]")
    if kind == "cpu":
        if ids:
            raise ValueError(f"device {spec!r}: the cpu takes no ids")
        return [cpu()]
    try:
        numbers = [int(t) for t in ids.split(",")] if ids else [0]
    except ValueError:
        raise ValueError(f"device {spec!r}: ids must be comma-separated ints") from None
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"device {spec!r}: a device is listed twice")
    make = emu if kind == "emu" else cuda
    return [make(i) for i in numbers]


def of(*arrays):
    """The device the arrays live on (None entries are skipped; plain NumPy -> the host).
    Arrays of two devices -> ValueError."""
    found = None
    for a in arrays:
        if a is None or not hasattr(a, "dtype"):
            continue
        if is_cupy(a):
            d = cuda(a.device.id)
        elif isinstance(a, EmuArray):
            d = emu(a._emu_id)
        else:
            d = _CPU
        if found is None or found is _CPU and d.kind == "emu":
            found = d            # host arrays may join an emulated device's (it reads host memory)
        elif d is not found and not (d is _CPU and found.kind == "emu"):
            raise ValueError(f"arrays on two devices ({found.name} and {d.name}): copy them to one")
    return found or _CPU


def to_host(a):
    """Any array as a NumPy array on the host (no copy where it is one already)."""
    if is_cupy(a):
        return a.get()
    if isinstance(a, EmuArray):
        return a.view(np.ndarray)
    return np.asarray(a)
