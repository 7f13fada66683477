"""The copy stage of the pipeline on a GPU: pinned host memory, its own
CUDA stream, and the augmentation kernel run on that stream, all on the
loader's device (the GPU of the net's first column, whatever GPU is current).

Device memory safety: the consumer frees a batch when it moves on, and
CuPy's pool may hand that block to this stage for a later batch while
kernels queued on the consumer's stream still read it. So the consumer's
stream records an event each time the consumer asks for a batch, and this
stage makes its stream wait for the latest such event after allocating and
before writing. Every block freed by the consumer was freed after an event
that covers its last use.
"""
import threading

import numpy as np


class DeviceStage:
    """Pipeline stage: (b, uint8 images, labels, params) -> (x CuPy float32, labels CuPy int32)."""

    __name__ = "copy"

    def __init__(self, loader, device):
        import cupy
        self.cp = cupy
        self.loader = loader
        self.device = cupy.cuda.Device(device.id)
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.consumer_stream = cupy.cuda.get_current_stream()
            self.mean = cupy.asarray(np.asarray(loader.dataset.mean, np.float32))
            self.consumer_stream.synchronize()     # the mean is read on the copy stream
        self._pinned = {}
        self._event = None
        self._lock = threading.Lock()

    def consumer_mark(self):
        """Called in the consumer's thread when it asks for the next batch."""
        ev = self.cp.cuda.Event(disable_timing=True)
        ev.record(self.consumer_stream)
        with self._lock:
            self._event = ev

    def _pinned_view(self, slot, a):
        key = (slot, a.dtype.str, a.shape[1:])
        buf = self._pinned.get(key)
        if buf is None or buf.shape[0] < a.shape[0]:
            mem = self.cp.cuda.alloc_pinned_memory(a.nbytes)
            buf = np.frombuffer(mem, a.dtype, a.size).reshape(a.shape)
            self._pinned[key] = buf
        view = buf[: a.shape[0]]
        np.copyto(view, a)
        return view

    def __call__(self, item):
        from convnet.kernel_ops import augment as kaug
        cp = self.cp
        b, images, labels, (offsets, flips, light) = item
        with self.device, self.stream:
            d_images = cp.empty(images.shape, cp.uint8)
            d_labels = cp.empty(labels.shape, cp.int32)
            d_off = cp.empty(offsets.shape, cp.int32)
            d_flips = cp.empty(flips.shape, cp.int32)
            d_light = cp.empty(light.shape, cp.float32)
            n, s, _, c = images.shape
            crop = self.loader.crop
            out = cp.empty((n, c, crop, crop), cp.float32)
            with self._lock:
                ev = self._event
            if ev is not None:
                self.stream.wait_event(ev)
            for slot, (dst, src) in enumerate(((d_images, images), (d_labels, labels.astype(np.int32)),
                                               (d_off, offsets), (d_flips, flips), (d_light, light))):
                dst.set(self._pinned_view(slot, np.ascontiguousarray(src)), stream=self.stream)
            kaug.augment_crop(d_images, self.mean, d_off, d_flips, d_light, crop, out=out)
            self.stream.synchronize()       # pinned buffers reusable; the batch is ready
        return out, d_labels
