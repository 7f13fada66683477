"""Placement of a network's columns on devices, the copies between columns, and streams.

    placement = Placement(devices, columns)      # devices: convnet.backend device objects
    placement.device(column)          # the device a column runs on
    with placement.context(column):   # that column's device and stream current
        ...
    y = placement.transfer(x, src_column, dst_column)
    placement.copy_kind(src_column, dst_column)
        # "peer-to-peer" | "staged" | "same device" | "emulated peer copy" | "host"

Column c runs on devices[c % len(devices)]. Each column has a stream of its
own device (GPUs: a cupy.cuda.Stream, so the columns' kernels run
concurrently; the host and emulated devices have none). Where an activation
(or, backwards, a gradient) crosses from one column to another, the
destination device receives it (convnet.backend's `receive`):

  peer-to-peer        different GPUs with peer access: cudaMemcpyPeerAsync on
                      the destination's stream, after an event of the source's;
  staged              different GPUs without it: through the host;
  same device         both columns on one device: a device-to-device copy;
  emulated peer copy  two emulated devices: a copy into the destination's memory;
  host                the NumPy backend: a plain array copy.

A GPU copy's source is kept referenced until `end_backward()`: CuPy's memory
pool would otherwise hand its memory to the next allocation on the source
stream while the destination stream still reads it. No host synchronization
happens in a training step: `begin()` makes every column stream wait for its
device's current stream (the optimizer's update), and `end_backward()` makes
every column stream wait for every other (so the copies' sources may be
reused) and each device's current stream wait for its column streams (so the
update sees the gradients).
"""
from convnet import backend

COPY_KINDS = ("peer-to-peer", "staged", "same device", "emulated peer copy", "host")


class Placement:
    """Which device each column runs on, and how arrays move between columns."""

    def __init__(self, devices=None, columns=(0,)):
        devices = backend.parse(devices) if devices is not None else [backend.cpu()]
        kinds = {d.kind for d in devices}
        if len(kinds) > 1:
            raise ValueError(f"one kind of device per net, got {', '.join(d.name for d in devices)}")
        if len({id(d) for d in devices}) != len(devices):
            raise ValueError(f"a device is listed twice: {', '.join(d.name for d in devices)}")
        self.devices = devices
        self.columns = sorted(set(columns))
        self.streams = {c: self.device(c).new_stream() for c in self.columns}
        self._in_flight = []          # sources of asynchronous copies, kept alive until end_backward()

    @property
    def kind(self):
        return self.devices[0].kind

    def device(self, column):
        """The device column runs on."""
        return self.devices[column % len(self.devices)]

    def device_name(self, column):
        return self.device(column).name

    def context(self, column):
        """Makes the column's device and stream current."""
        return self.device(column).context(self.streams.get(column))

    def copy_kind(self, src_column, dst_column):
        """How an array goes from one column to another."""
        return self.device(dst_column).copy_kind(self.device(src_column))

    def transfer(self, x, src_column, dst_column):
        """A copy of x (produced on src_column) on dst_column's device, ordered on dst's stream."""
        dst = self.device(dst_column)
        return dst.receive(x, self.device(src_column), self.streams.get(src_column),
                           self.streams.get(dst_column), keep=self._in_flight)

    def to_device(self, x, column, dtype):
        """x (host or any device's array) as a C-contiguous `dtype` array on the column's device."""
        return self.device(column).asarray(x, dtype, stream=self.streams.get(column))

    def begin(self):
        """Before a forward pass: each column's stream waits for the work already queued on its
        device's current stream (e.g. the optimizer's update of the weights)."""
        if self.kind != "cuda":
            return
        import cupy
        for c, stream in self.streams.items():
            with self.device(c).context():
                stream.wait_event(cupy.cuda.get_current_stream().record())

    def end_backward(self):
        """After a backward pass, without waiting on the host: every column stream waits for
        every other (the copies are done, so their sources may be freed) and each device's
        current stream waits for its columns (the update reads the gradients)."""
        if self.kind == "cuda":
            import cupy
            done = {}
            for c, stream in self.streams.items():
                with self.device(c).context():       # an event belongs to its stream's device
                    done[c] = stream.record()
            for c, stream in self.streams.items():
                with self.device(c).context():
                    for other, ev in done.items():
                        if other != c:
                            stream.wait_event(ev)
                    cupy.cuda.get_current_stream().wait_event(done[c])
        self._in_flight.clear()

    def synchronize(self):
        """Waits on the host for every column's stream (checkpoints, evaluation results)."""
        for s in self.streams.values():
            if s is not None:
                s.synchronize()
        self._in_flight.clear()
