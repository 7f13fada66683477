"""Data parallelism: K processes (MPI ranks) train one network on slices of each global batch.

    mpirun -n 2 python -m convnet.train --data-parallel ...   (docs/data-parallel.md)

    comm = distributed.init(devices, timeout=120)   # MPI (mpi4py); NCCL for GPU gradients
    dp = distributed.DataParallel(comm, net, bucket_mb=8)
    loss = dp.train_step(net, opt, x, labels, rows)  # rows = (lo, hi, n) of the global batch
    top1, top5, n = comm.sum_ints(top1, top5, n)

The scheme (exact, up to float rounding, against one process with the same
global batch, learning rate and seed):

- Data: every rank draws the same permutation of the epoch and takes the
  contiguous rows lo:hi of each global batch (convnet.data.make_loader's
  `shard`); augmentation parameters are drawn for the global batch and
  sliced.
- Dropout: the net's `row_offset` is lo, so a rank's mask is rows lo:hi of
  the one-process mask (the mask is a counter-based function of the
  element's index in the global batch).
- Gradients: a rank's loss is the mean over its n_r = hi - lo rows; each
  rank scales its gradients by n_r / n and the ranks' gradients are summed:
  sum_r (n_r / n) * mean_r = the mean over the global batch, also for a
  short last batch. A rank whose slice is empty (a last batch with fewer
  images than ranks) sends zeros. The loss is reduced the same way (one
  more float in the first bucket), so every rank reports the global loss.
- Buckets: the Params, in the order their gradients are finished by the
  backward pass, are grouped per device into buckets of about `bucket_mb`
  MiB. Net.backward calls `on_layer` as each layer finishes; when the last
  Param of a bucket is in, the bucket is packed (scaled) into its buffer and
  its all-reduce starts (MPI: a non-blocking Iallreduce; GPUs: an NCCL
  allReduce on a stream of its own after an event of the column's stream),
  so communication overlaps the rest of the backward pass. Before the
  optimizer step every bucket is waited for, and each Param's grad becomes
  a view of its bucket's reduced buffer. Every rank launches the buckets in
  the same order (fixed when the reducer is built).
- Model parallelism inside a rank: the net's columns are on the rank's
  devices as without data parallelism (--gpus 0,1 or --device emu --gpus
  0,1); each device's Params go into that device's buckets (GPUs: one NCCL
  communicator per local device index, across ranks).

Failure: every wait on another rank (a bucket, a sum) polls with a deadline
of `timeout` seconds (default DEFAULT_TIMEOUT); past it the rank prints which
wait timed out and calls MPI_Abort, which makes mpirun end every rank with a
non-zero status. A rank that dies is noticed by mpirun itself (Open MPI ends
the job); a rank that hangs is noticed by the others' deadline. Only rank 0
writes checkpoints (atomically, as without data parallelism), so the last
one stays intact.

On the CPU, Open MPI makes progress on a non-blocking reduction only inside
MPI calls, so there the overlap is small (each new bucket's launch tests the
earlier ones); the GPU path's overlap comes from NCCL's own stream.
"""
import math
import os
import sys
import time

import numpy as np

from convnet import backend

DEFAULT_TIMEOUT = 120.0     # seconds a rank waits for the others before it aborts the job
DEFAULT_BUCKET_MB = 8.0
POLL_S = (0.0001, 0.005)    # sleeps between tests of an outstanding request: first, longest


class DistributedError(RuntimeError):
    """A collective failed or timed out (the job is being aborted)."""


def launched_by_mpirun():
    """True when this process was started by mpirun/mpiexec (Open MPI, MPICH, PMIx)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"))


class Comm:
    """One process: rank 0 of 1. The base of MPIComm (the same methods)."""

    rank = 0
    size = 1
    name = "single process"

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = float(timeout)

    @property
    def is_root(self):
        return self.rank == 0

    def allreduce_start(self, buf):
        """Starts summing the host array `buf` in place over the ranks; returns a request."""
        return None

    def wait(self, requests, what):
        """Waits for requests (from allreduce_start); past the timeout: abort the job."""

    def sum_floats(self, *values):
        """The sums over the ranks of float64 values (a blocking all-reduce, under the timeout)."""
        buf = np.array(values, dtype=np.float64)
        self.wait([self.allreduce_start(buf)], "a sum over the ranks")
        return tuple(float(v) for v in buf)

    def sum_ints(self, *values):
        return tuple(int(round(v)) for v in self.sum_floats(*values))

    def same_on_all(self, value, what):
        """Raises DistributedError on every rank unless the float `value` is equal on all."""
        lo, hi = self.min_max(value)
        if lo != hi:
            raise DistributedError(f"{what} differs between the ranks ({lo!r} .. {hi!r})")

    def min_max(self, value):
        return float(value), float(value)

    def abort(self, message, code=1):
        print(message, file=sys.stderr, flush=True)
        raise DistributedError(message)


class MPIComm(Comm):
    """The ranks of MPI_COMM_WORLD (mpi4py)."""

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        super().__init__(timeout)
        from mpi4py import MPI
        self.MPI = MPI
        self.world = MPI.COMM_WORLD
        _running.append(self)
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        self.name = f"MPI ({MPI.Get_library_version().splitlines()[0].strip()[:40]})"

    def allreduce_start(self, buf):
        return self.world.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def wait(self, requests, what):
        requests = [r for r in requests if r is not None]
        if not requests:
            return
        deadline = time.monotonic() + self.timeout
        nap = POLL_S[0]
        while not self.MPI.Request.Testall(requests):
            if time.monotonic() > deadline:
                self.abort(f"convnet.train: rank {self.rank} of {self.size}: waited {self.timeout:g} s for "
                           f"{what} from the other ranks: a rank died or hangs; aborting every rank")
            time.sleep(nap)
            nap = min(2 * nap, POLL_S[1])

    def min_max(self, value):
        lo = np.array([value, -value], dtype=np.float64)
        self.wait([self.world.Iallreduce(self.MPI.IN_PLACE, lo, op=self.MPI.MIN)], "a check over the ranks")
        return float(lo[0]), float(-lo[1])

    def bcast(self, obj, root=0):
        return self.world.bcast(obj, root=root)

    def abort(self, message, code=1):
        print(message, file=sys.stderr, flush=True)
        self.world.Abort(code)
        raise DistributedError(message)        # not reached: Abort ends the process


_running = []       # the MPIComm of this process, once made


def abort_job(code):
    """After a rank's failure (exit code `code` != 0): MPI_Abort, so mpirun ends every rank at
    once instead of the others waiting out their timeout. Nothing without an MPIComm."""
    if _running and _running[0].size > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        _running[0].world.Abort(code)


def init(timeout=DEFAULT_TIMEOUT):
    """The communicator of this process: MPIComm under mpirun (mpi4py needed), else Comm."""
    if not launched_by_mpirun():
        return Comm(timeout)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise ValueError("--data-parallel under mpirun needs mpi4py (make installs it)") from None
    return MPIComm(timeout)


# --- the gradient buckets ------------------------------------------------------------------------

class Bucket:
    """Params of one device whose grads are all-reduced together, and their flat buffer."""

    def __init__(self, device, dtype):
        self.device = device
        self.dtype = np.dtype(dtype)
        self.params = []
        self.offsets = []
        self.size = 0
        self.loss_slot = None           # index of the loss in the buffer (first bucket only)
        self.buf = None
        self.pending = 0
        self.request = None             # MPI request or NCCL done event
        self.launched = False

    def add(self, p):
        self.params.append(p)
        self.offsets.append(self.size)
        self.size += p.size

    def nbytes(self):
        return self.size * self.dtype.itemsize

    def allocate(self):
        n = self.size + (1 if self.loss_slot is not None else 0)
        with self.device.context():
            self.buf = self.device.xp.zeros((n,), dtype=self.dtype)


class DataParallel:
    """Averages gradients over the ranks of `comm` in buckets launched during backward."""

    def __init__(self, comm, net, bucket_mb=DEFAULT_BUCKET_MB):
        if not bucket_mb > 0:
            raise ValueError(f"bucket size must be > 0 MiB, got {bucket_mb}")
        self.comm = comm
        self.net = net
        self.bucket_mb = float(bucket_mb)
        self.limit = int(bucket_mb * 2 ** 20)
        self.gpu = net.devices[0].kind == "cuda"
        self.nccl = NCCLReducer(comm, net.devices) if self.gpu and comm.size > 1 else None
        # Params in the order backward finishes them; one open bucket per device
        order = [p for layer in reversed(net.nodes) for p in layer.params.values()]
        if sorted(id(p) for p in order) != sorted(id(p) for p in net.params()):
            raise RuntimeError("data parallel: the layers' Params are not the net's Params")
        self.buckets, open_ = [], {}
        self.bucket_of = {}
        for p in order:
            dev = backend.of(p.value)
            b = open_.get(dev)
            if b is None or b.nbytes() + p.size * b.dtype.itemsize > self.limit and b.params:
                b = open_[dev] = Bucket(dev, p.value.dtype)
                self.buckets.append(b)
            b.add(p)
            self.bucket_of[id(p)] = b
        out_dev = net.placement.device(net.layers[net.output].column)
        first = next((b for b in self.buckets if b.device is out_dev), None)
        if first is None:                       # no Params on the loss's device: a loss-only bucket
            first = Bucket(out_dev, net.dtype)
            self.buckets.insert(0, first)
        first.loss_slot = first.size
        self.loss_bucket = first
        for b in self.buckets:
            b.allocate()
        # the launch order: a bucket launches when backward has finished its last Param
        self.launch_order = [b for b in self.buckets if not b.params]
        left = {id(b): len(b.params) for b in self.buckets}
        for layer in reversed(net.nodes):
            for p in layer.params.values():
                b = self.bucket_of[id(p)]
                left[id(b)] -= 1
                if left[id(b)] == 0:
                    self.launch_order.append(b)
        self._launched = []
        self.weight = 1.0

    def describe(self):
        mb = sum(b.nbytes() for b in self.buckets) / 2 ** 20
        how = "NCCL" if self.nccl is not None else self.comm.name
        ranks = f"{self.comm.size} rank{'s' if self.comm.size != 1 else ''}"
        return (f"data parallel: {ranks} over {how}; {len(self.buckets)} gradient buckets "
                f"({mb:.1f} MiB per step, <= {self.bucket_mb:g} MiB each); timeout {self.comm.timeout:g} s")

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, net, opt, x, labels, rows):
        """Forward and backward of this rank's rows lo:hi of a global batch of n, the averaged
        gradients, one optimizer step. Returns the global batch's mean loss (on the device)."""
        lo, hi, n = rows
        self.weight = (hi - lo) / n
        self._launched = []
        for b in self.buckets:
            b.pending = len(b.params)
            b.launched = False
        lb = self.loss_bucket
        if hi > lo:
            net.row_offset = lo
            logits = net.forward(x, train=True)
            loss = net.loss(logits, labels, sync=False)
            with lb.device.context(net.placement.streams.get(net.layers[net.output].column)):
                lb.buf[lb.loss_slot:] = loss * self.weight
            for b in self.buckets:
                if not b.params:
                    self._launch(b)
            net.backward(on_layer=self._layer_done)
        else:                                   # an empty slice: zeros, in the same order
            net.step += 1                       # as a forward would (the dropout masks' step)
            for b in self.launch_order:
                with b.device.context():
                    b.buf[...] = 0
                self._launch(b, pack=False)
        if [id(b) for b in self._launched] != [id(b) for b in self.launch_order]:
            raise RuntimeError("data parallel: buckets launched out of their fixed order")
        self._finish()
        opt.step()
        with lb.device.context():               # a copy: the buffer is reused next step
            return lb.buf[lb.loss_slot:].copy()[0]

    def _layer_done(self, layer):
        for p in layer.params.values():
            b = self.bucket_of[id(p)]
            b.pending -= 1
            if b.pending == 0:
                self._launch(b)

    def _launch(self, b, pack=True):
        if pack:
            w = b.dtype.type(self.weight)
            with b.device.context():
                for p, off in zip(b.params, b.offsets):
                    g = p.grad.reshape(-1)
                    b.buf[off:off + p.size] = g * w
        if self.nccl is not None:
            b.request = self.nccl.start(b)
        elif self.comm.size > 1:
            b.request = self.comm.allreduce_start(backend.to_host(b.buf))     # a view: host memory
            for earlier in self._launched:      # let MPI progress the earlier ones
                if earlier.request is not None:
                    earlier.request.Test()
        b.launched = True
        self._launched.append(b)

    def _finish(self):
        if self.nccl is not None:
            self.nccl.finish(self.buckets)
        else:
            self.comm.wait([b.request for b in self.buckets], "the gradient all-reduce")
        for b in self.buckets:
            b.request = None
            for p, off in zip(b.params, b.offsets):
                p.grad = b.buf[off:off + p.size].reshape(p.shape)


class NCCLReducer:
    """GPU buckets: one NCCL communicator per local device index (column device) across the
    ranks, each with a stream of its own. The ids go out from rank 0 over MPI.

    Not run in this project's CI (no GPU there); see docs/data-parallel.md."""

    def __init__(self, comm, devices):
        import cupy
        try:
            from cupy.cuda import nccl
        except ImportError as e:
            raise ValueError(f"--data-parallel on GPUs needs NCCL through cupy.cuda.nccl ({e})") from None
        self.cupy, self.nccl, self.comm = cupy, nccl, comm
        self.comms, self.streams = {}, {}
        self.previous = []
        for i, d in enumerate(devices):
            uid = nccl.get_unique_id() if comm.rank == 0 else None
            uid = comm.bcast(uid)
            with d.context():
                self.comms[d.id] = nccl.NcclCommunicator(comm.size, uid, comm.rank)
                self.streams[d.id] = d.new_stream()
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def start(self, b):
        cupy = self.cupy
        with b.device.context():
            ready = cupy.cuda.get_current_stream().record()   # the column's stream (in the hook)
            s = self.streams[b.device.id]
            s.wait_event(ready)
            self.comms[b.device.id].allReduce(b.buf.data.ptr, b.buf.data.ptr, b.buf.size,
                                              self.types[b.dtype], self.nccl.NCCL_SUM, s.ptr)
            return s.record()

    def finish(self, buckets):
        """The devices' current streams (the optimizer's) wait for the reductions on the GPU, no
        host wait; the host waits (under the timeout) for the previous step's reductions, so it
        runs at most one step ahead and a hung rank is noticed."""
        cupy = self.cupy
        deadline = time.monotonic() + self.comm.timeout
        for ev in self.previous:
            while not ev.done:
                if time.monotonic() > deadline:
                    for c in self.comms.values():
                        c.abort()
                    self.comm.abort(f"convnet.train: rank {self.comm.rank} of {self.comm.size}: waited "
                                    f"{self.comm.timeout:g} s for the NCCL gradient all-reduce: a rank "
                                    "died or hangs; aborting every rank")
                time.sleep(POLL_S[1])
        self.previous = []
        for b in buckets:
            with b.device.context():
                cupy.cuda.get_current_stream().wait_event(b.request)
            self.previous.append(b.request)


def check_same_weights(comm, net):
    """DistributedError unless every rank holds the same weights (a float64 checksum)."""
    if comm.size == 1:
        return
    total = 0.0
    for i, p in enumerate(net.params()):
        total += float(np.sum(backend.to_host(p.value), dtype=np.float64)) * (1.0 + 1e-3 * i)
    comm.same_on_all(total, "the weights' checksum")



# --- the cost model on paper (docs/data-parallel.md; `python -m convnet.distributed`) ----------------
#
# Nominal link bandwidths per GPU and direction, bytes/s (vendor and standard figures, not measured
# here): NVLink 4 on an H100 SXM, 900 GB/s both directions together (NVIDIA's H100 datasheet); PCIe
# 4.0 x16, 16 GT/s x 16 lanes x 128/130 (the PCI-SIG spec); InfiniBand NDR 400 Gb/s and HDR 200 Gb/s
# per port, one port per GPU (as in an 8-GPU DGX H100 node).
FABRICS = (("NVLink 4", 450e9), ("PCIe 4.0 x16", 31.5e9), ("InfiniBand NDR", 50e9),
           ("InfiniBand HDR", 25e9))
LATENCY_S = 5e-6        # per ring step (an assumption: a few microseconds on NVLink and InfiniBand)


def _weights_and_flops(config, batch):
    """(layers [(name, kind, column, params, forward FLOPs of `batch` images)] in config order,
    the net) from a config's shapes (nothing allocated)."""
    from convnet.net import Net
    net = Net(config, materialize=False, fuse=False)
    rows = []
    for name in net.config_order:
        layer = net.layers[name]
        n = sum(p.size for p in layer.params.values())
        flops = 0
        if layer.kind in ("conv", "fc"):
            w = layer.params["w"]
            flops = 2 * batch * math.prod(layer.out_shape) * (w.size // w.shape[0])
        if n:
            rows.append((name, layer.kind, layer.column, n, flops))
    return rows, net


def bucket_sizes(sizes, limit):
    """Bucket byte counts of gradients of `sizes` bytes, in the order backward finishes them, with
    DataParallel's rule: a bucket is closed before a gradient that would take it past `limit`."""
    out = []
    for s in sizes:
        if out and out[-1] + s <= limit:
            out[-1] += s
        else:
            out.append(s)
    return out


def ring_seconds(nbytes, ranks, bandwidth, buckets=1):
    """A ring all-reduce of nbytes over `ranks`: 2 (K-1)/K of the bytes through each GPU's link,
    plus 2 (K-1) latency steps per bucket."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + buckets * 2 * (ranks - 1) * LATENCY_S


def cost_model(config="alexnet", batch=128, gpus=(2, 8, 64), rate=20e12, bucket_mb=DEFAULT_BUCKET_MB):
    """Predicted scaling efficiency of three layouts of a two-column config at `gpus` GPUs, with
    `batch` images per rank and a sustained `rate` FLOP/s per GPU (an assumption). Returns
    (facts dict, rows [(layout, fabric, {gpus: (exposed seconds, efficiency)})]).

    A step's compute is 3x the forward FLOPs (forward, the input gradient, the weight gradient).
    The gradient buckets of the fully connected layers are finished first in backward, so their
    all-reduce overlaps the convolutions' backward (2/3 of their FLOPs); the exposed time is what
    does not fit in that window. Efficiency = compute / (compute + exposed), against one rank of
    the same layout (weak scaling: the global batch grows with the ranks).

    Layouts: "data parallel" (one column's worth of net per GPU: the whole net, every GPU a rank);
    "2 columns per rank" (the paper's two columns on two GPUs, data parallel over G/2 ranks; each
    GPU all-reduces its own column's weights); "one weird trick" (data parallel convolutions over
    all G GPUs, the fully connected layers split over the G GPUs by neurons: their weights are never
    all-reduced, their inputs and outputs are exchanged instead: per image the pool5 activations,
    fc6 and fc7 outputs and the logits, forward and their gradients backward, none of it overlapped)."""
    rows, net = _weights_and_flops(config, batch)
    item = 4
    limit = int(bucket_mb * 2 ** 20)
    total_params = sum(r[3] for r in rows)
    conv_params = sum(r[3] for r in rows if r[1] == "conv")
    fwd = sum(r[4] for r in rows)
    conv_fwd = sum(r[4] for r in rows if r[1] == "conv")
    step_1gpu = 3 * fwd / rate
    window_1gpu = 2 * conv_fwd / rate
    backward_order = list(reversed(rows))
    buckets_all = len(bucket_sizes([r[3] * item for r in backward_order], limit))
    columns = sorted({r[2] for r in rows})
    col_bytes = {c: sum(r[3] for r in rows if r[2] == c) * item for c in columns}
    col_buckets = {c: len(bucket_sizes([r[3] * item for r in backward_order if r[2] == c], limit))
                   for c in columns}
    big = max(columns, key=lambda c: col_bytes[c])
    # one weird trick: floats per image crossing GPUs at the fully connected layers
    fc_inputs = [n for n in net.config_order if net.layers[n].kind == "fc"]
    first_fc = net.layers[fc_inputs[0]]
    per_image = sum(math.prod(s) for s in first_fc.in_shapes)            # pool5 (both columns)
    per_image += sum(math.prod(net.layers[n].out_shape) for n in fc_inputs)   # fc6, fc7 halves, fc8
    act_bytes_per_image = 2 * per_image * item                                # forward + backward

    facts = {"params": total_params, "conv_params": conv_params, "bytes": total_params * item,
             "conv_bytes": conv_params * item, "column_bytes": col_bytes, "forward_flops": fwd,
             "step_seconds_1gpu": step_1gpu, "overlap_window_1gpu": window_1gpu,
             "buckets": buckets_all, "column_buckets": col_buckets, "exchange_bytes_per_image":
             act_bytes_per_image, "rate": rate, "batch": batch}
    out = []
    for fabric, bw in FABRICS:
        dp, cols, trick = {}, {}, {}
        for g in gpus:
            # data parallel: every GPU a rank, the whole net's gradients
            comm = ring_seconds(total_params * item, g, bw, buckets_all)
            exposed = max(0.0, comm - window_1gpu)
            dp[g] = (exposed, step_1gpu / (step_1gpu + exposed))
            # two columns per rank: each GPU half the compute, its column's gradients over G/2 ranks
            k = max(1, g // len(columns))
            step = step_1gpu / len(columns)
            comm = ring_seconds(col_bytes[big], k, bw, col_buckets[big])
            exposed = max(0.0, comm - window_1gpu / len(columns))
            cols[g] = (exposed, step / (step + exposed))
            # one weird trick: conv gradients overlapped, activations exchanged on the critical path
            conv_comm = ring_seconds(conv_params * item, g, bw,
                                     len(bucket_sizes([r[3] * item for r in backward_order
                                                       if r[1] == "conv"], limit)))
            act = (g - 1) * batch * act_bytes_per_image / bw
            exposed = act + max(0.0, conv_comm - window_1gpu)
            trick[g] = (exposed, step_1gpu / (step_1gpu + exposed))
        out += [("data parallel", fabric, dp), ("2 columns per rank", fabric, cols),
                ("one weird trick", fabric, trick)]
    return facts, out


def cost_report(config="alexnet", batch=128, gpus=(2, 8, 64), rates=(20e12, 200e12)):
    """The cost model's tables as text (what docs/data-parallel.md shows)."""
    lines = []
    for rate in rates:
        facts, rows = cost_model(config, batch, gpus, rate)
        if rate == rates[0]:
            cb = facts["column_bytes"]
            lines += [f"{config}: {facts['params']:,} parameters = {facts['bytes'] / 1e6:.1f} MB of float32 "
                      f"gradients per step ({facts['conv_bytes'] / 1e6:.1f} MB in the convolutions); "
                      f"per column: " + ", ".join(f"{c}: {b / 1e6:.1f} MB" for c, b in cb.items()),
                      f"forward {facts['forward_flops'] / batch / 1e9:.3f} GFLOP per image; buckets of "
                      f"{DEFAULT_BUCKET_MB:g} MiB: {facts['buckets']} for the whole net; one weird trick "
                      f"exchanges {facts['exchange_bytes_per_image'] / 1e3:.1f} kB per image and GPU pair"]
        lines += ["", f"sustained {rate / 1e12:g} TFLOP/s per GPU (assumed), {batch} images per rank: "
                      f"one GPU's step {1e3 * facts['step_seconds_1gpu']:.1f} ms, of which "
                      f"{1e3 * facts['overlap_window_1gpu']:.1f} ms of convolution backward to hide "
                      "the all-reduce in",
                  "efficiency (exposed communication ms) at " + ", ".join(f"{g}" for g in gpus) + " GPUs"]
        width = max(len(f"{layout}, {fabric}") for layout, fabric, _ in rows)
        for layout, fabric, eff in rows:
            cells = "  ".join(f"{100 * e:5.1f}% ({1e3 * x:6.1f})" for x, e in eff.values())
            lines.append(f"  {(layout + ', ' + fabric).ljust(width)}  {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(cost_report(*(sys.argv[1:2] or ["alexnet"])))
