"""Placement of a network's columns on devices, the copies between columns, and streams.

    placement = Placement(backend, devices, columns)
    placement.device(column)          # GPU id of a column (None on the CPU backends)
    with placement.context(column):   # that column's GPU and stream current (no-op on the CPU)
        ...
    y = placement.transfer(x, src_column, dst_column)
    placement.copy_kind(src_column, dst_column)  # "peer-to-peer" | "staged" | "same device" | "host"

Column c runs on devices[c % len(devices)]. On the GPU each column has its own
cupy.cuda.Stream, created on its device, so the columns' kernels run
concurrently; where an activation (or, backwards, a gradient) crosses from
one column to another:

  1. an event is recorded on the source column's stream and the destination
     column's stream waits for it;
  2. the array is copied on the destination's stream:
       peer-to-peer  different GPUs that can access each other
                     (cudaDeviceCanAccessPeer; peer access enabled once per
                     pair): cudaMemcpyPeerAsync;
       staged        different GPUs without peer access: device -> host
                     (on the source stream, then synchronized) -> device;
       same device   both columns on one GPU: a device-to-device copy;
  3. the source array is kept referenced until synchronize(): CuPy's memory
     pool would otherwise hand its memory to the next allocation on the
     source stream while the destination stream still reads it. The net
     synchronizes at the start of forward and at the end of backward.

The streams are blocking streams (they synchronize with the legacy default
stream); besides, begin() makes each stream wait for the caller's current
stream before a forward pass, and the net synchronizes the streams at the end
of backward, so the optimizer's update (on any stream) is ordered between
steps.

On the NumPy and emulation backends every column runs on the host and a
crossing is a plain array copy ("host").
"""
import contextlib

import numpy as np

COPY_KINDS = ("peer-to-peer", "staged", "same device", "host")


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise ValueError("backend 'cuda' needs CuPy (pip install cupy-cuda13x)") from e
    return cupy


def gpu_count():
    """Number of CUDA devices CuPy sees (0 without CuPy or without a driver)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


class Placement:
    """Which device each column runs on, and how arrays move between columns."""

    def __init__(self, backend, devices=None, columns=(0,)):
        self.backend = backend
        self.columns = sorted(set(columns))
        if devices is not None:
            if isinstance(devices, (int, np.integer)) or not hasattr(devices, "__iter__"):
                raise TypeError(f"devices must be None or a list of GPU ids, got {devices!r}")
            devices = list(devices)
            if not devices or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                                      for d in devices):
                raise ValueError(f"devices must be a non-empty list of GPU ids >= 0, got {devices!r}")
            devices = [int(d) for d in devices]
        if backend == "cuda":
            cupy = _cupy()
            count = gpu_count()
            if count == 0:
                raise ValueError("backend 'cuda' needs a GPU, and CuPy finds none")
            devices = devices or [cupy.cuda.runtime.getDevice()]
            bad = [d for d in devices if d >= count]
            if bad:
                raise ValueError(f"GPU {bad[0]} requested but {count} GPU(s) found")
        self.devices = devices
        self.streams = {}
        self._peer = {}
        self._in_flight = []          # sources of asynchronous copies, kept alive until synchronize()
        if backend == "cuda":
            for c in self.columns:
                with cupy.cuda.Device(self.device(c)):
                    self.streams[c] = cupy.cuda.Stream(non_blocking=False)

    @property
    def on_gpu(self):
        return self.backend == "cuda"

    def device(self, column):
        """The GPU id of a column on the cuda backend; None on the host backends."""
        if not self.on_gpu:
            return None
        return self.devices[column % len(self.devices)]

    def device_name(self, column):
        return f"gpu{self.device(column)}" if self.on_gpu else "cpu"

    @contextlib.contextmanager
    def context(self, column):
        """Makes the column's GPU and stream current (nothing on the host backends)."""
        if not self.on_gpu:
            yield
            return
        import cupy
        with cupy.cuda.Device(self.device(column)):
            with self.streams[column]:
                yield

    def _can_peer(self, src, dst):
        """True when GPU dst can read GPU src's memory directly; enables peer access once."""
        key = (src, dst)
        if key not in self._peer:
            import cupy
            rt = cupy.cuda.runtime
            ok = bool(rt.deviceCanAccessPeer(dst, src))
            if ok:
                with cupy.cuda.Device(dst):
                    try:
                        rt.deviceEnablePeerAccess(src)
                    except rt.CUDARuntimeError as e:    # already enabled (by us or by CuPy)
                        if "PeerAccessAlreadyEnabled" not in str(e):
                            ok = False
            self._peer[key] = ok
        return self._peer[key]

    def copy_kind(self, src_column, dst_column):
        """How an array goes from one column to another."""
        if not self.on_gpu:
            return "host"
        src, dst = self.device(src_column), self.device(dst_column)
        if src == dst:
            return "same device"
        return "peer-to-peer" if self._can_peer(src, dst) else "staged"

    def transfer(self, x, src_column, dst_column):
        """A copy of x (produced on src_column) on dst_column's device, ordered on dst's stream."""
        if not self.on_gpu:
            return np.array(x, copy=True)
        import cupy
        rt = cupy.cuda.runtime
        src, dst = self.device(src_column), self.device(dst_column)
        src_stream, dst_stream = self.streams[src_column], self.streams[dst_column]
        kind = self.copy_kind(src_column, dst_column)
        with cupy.cuda.Device(src):
            with src_stream:
                x = cupy.ascontiguousarray(x)
            if kind == "staged":
                host = cupy.asnumpy(x, stream=src_stream)
                src_stream.synchronize()
            else:
                ready = src_stream.record()
                self._in_flight.append(x)
        with cupy.cuda.Device(dst):
            with dst_stream:
                out = cupy.empty(x.shape, dtype=x.dtype)
                if kind == "staged":
                    out.set(host, stream=dst_stream)
                else:
                    dst_stream.wait_event(ready)
                    if kind == "peer-to-peer":
                        rt.memcpyPeerAsync(out.data.ptr, dst, x.data.ptr, src, x.nbytes, dst_stream.ptr)
                    else:
                        rt.memcpyAsync(out.data.ptr, x.data.ptr, x.nbytes, rt.memcpyDeviceToDevice,
                                       dst_stream.ptr)
        return out

    def to_device(self, x, column, dtype):
        """x (NumPy or CuPy) as a C-contiguous `dtype` array on the column's device.

        A CuPy x is taken as ready once the caller's current stream has finished
        with it: the column's stream waits for an event recorded there."""
        if not self.on_gpu:
            if type(x).__module__.split(".")[0] == "cupy":
                x = x.get()
            return np.ascontiguousarray(x, dtype=dtype)
        import cupy
        dst = self.device(column)
        if isinstance(x, cupy.ndarray):
            with x.device:
                ready = cupy.cuda.get_current_stream().record()
                if x.device.id != dst:              # another GPU: a synchronous copy
                    ready.synchronize()
                    x = cupy.ascontiguousarray(x)
                    x.device.synchronize()
                    with cupy.cuda.Device(dst):
                        out = cupy.empty(x.shape, dtype=x.dtype)
                        cupy.cuda.runtime.memcpyPeer(out.data.ptr, dst, x.data.ptr, x.device.id, x.nbytes)
                    x = out
            with self.context(column):
                self.streams[column].wait_event(ready)
                return cupy.ascontiguousarray(x, dtype=dtype)
        with self.context(column):
            return cupy.ascontiguousarray(cupy.asarray(x, dtype=dtype))

    def begin(self):
        """Before a forward pass: the previous pass's copies are done (their sources may be
        freed), and each column's stream waits for the work already queued on the caller's
        current stream of its device (e.g. the optimizer's update of the weights)."""
        if not self.on_gpu:
            return
        import cupy
        self.synchronize()
        for c, stream in self.streams.items():
            with cupy.cuda.Device(self.device(c)):
                stream.wait_event(cupy.cuda.get_current_stream().record())

    def synchronize(self):
        """Waits for every column's stream."""
        for s in self.streams.values():
            s.synchronize()
        self._in_flight.clear()
