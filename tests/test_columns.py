"""Two columns: a mini AlexNet-shaped two-column net gives the same logits, loss and
gradients as the one-device net with grouped convolutions (same weights mapped
across), on the NumPy backend, on the CUDA emulation and (when there is one) on
the GPU; the whole two-column graph passes a float64 gradient check."""
import sys
import types

import numpy as np
import pytest

from convnet import backend as B
from convnet.gradcheck import check_gradients
from convnet.net import Net

N, INPUT = 3, (3, 35, 35)           # 35 -> conv1 5/2 -> 16 -> pool 8 -> conv2 8 -> pool 4 -> pool5 2
F = {"conv1": 3, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 2, "fc6": 6, "fc7": 5}   # per column
CLASSES = 7
LRN = {"size": 5, "alpha": 0.05, "beta": 0.75, "k": 2.0}   # alpha large enough to matter
HYPER = {"init_std": 0.2, "bias_init": 0.1, "layers": {"conv1*": {"init_std": 0.1}}}
GROUPED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def two_columns(p=0.5):
    L = [{"name": "data", "type": "data", "shape": list(INPUT)}]
    for c, s in ((0, "a"), (1, "b")):
        L += [
            {"name": f"conv1{s}", "type": "conv", "inputs": "data", "column": c,
             "filters": F["conv1"], "size": 5, "stride": 2, "neuron": "relu"},
            {"name": f"lrn1{s}", "type": "lrn", "inputs": f"conv1{s}", "column": c, **LRN},
            {"name": f"pool1{s}", "type": "pool", "inputs": f"lrn1{s}", "column": c},
            {"name": f"conv2{s}", "type": "conv", "inputs": f"pool1{s}", "column": c,
             "filters": F["conv2"], "size": 5, "pad": 2, "neuron": "relu"},
            {"name": f"lrn2{s}", "type": "lrn", "inputs": f"conv2{s}", "column": c, **LRN},
            {"name": f"pool2{s}", "type": "pool", "inputs": f"lrn2{s}", "column": c},
        ]
    for c, s in ((0, "a"), (1, "b")):
        L += [
            {"name": f"conv3{s}", "type": "conv", "inputs": ["pool2a", "pool2b"], "column": c,
             "filters": F["conv3"], "size": 3, "pad": 1, "neuron": "relu"},
            {"name": f"conv4{s}", "type": "conv", "inputs": f"conv3{s}", "column": c,
             "filters": F["conv4"], "size": 3, "pad": 1, "neuron": "relu"},
            {"name": f"conv5{s}", "type": "conv", "inputs": f"conv4{s}", "column": c,
             "filters": F["conv5"], "size": 3, "pad": 1, "neuron": "relu"},
            {"name": f"pool5{s}", "type": "pool", "inputs": f"conv5{s}", "column": c},
        ]
    for c, s in ((0, "a"), (1, "b")):
        L += [{"name": f"fc6{s}", "type": "fc", "inputs": ["pool5a", "pool5b"], "column": c,
               "outputs": F["fc6"], "neuron": "relu"},
              {"name": f"drop6{s}", "type": "dropout", "inputs": f"fc6{s}", "column": c, "p": p}]
    for c, s in ((0, "a"), (1, "b")):
        L += [{"name": f"fc7{s}", "type": "fc", "inputs": ["drop6a", "drop6b"], "column": c,
               "outputs": F["fc7"], "neuron": "relu"},
              {"name": f"drop7{s}", "type": "dropout", "inputs": f"fc7{s}", "column": c, "p": p}]
    L += [{"name": "fc8", "type": "fc", "inputs": ["drop7a", "drop7b"], "column": 0, "outputs": CLASSES},
          {"name": "loss", "type": "softmax_loss", "inputs": "fc8", "column": 0}]
    return {"name": "mini-2col", "LAYERS": L, "HYPER": HYPER}


def grouped(p=0.5):
    """The same network on one device: conv2/4/5 with groups 2, LRN within each half."""
    L = [
        {"name": "data", "type": "data", "shape": list(INPUT)},
        {"name": "conv1", "type": "conv", "inputs": "data", "filters": 2 * F["conv1"], "size": 5,
         "stride": 2, "neuron": "relu"},
        {"name": "lrn1", "type": "lrn", "inputs": "conv1", "groups": 2, **LRN},
        {"name": "pool1", "type": "pool", "inputs": "lrn1"},
        {"name": "conv2", "type": "conv", "inputs": "pool1", "filters": 2 * F["conv2"], "size": 5,
         "pad": 2, "groups": 2, "neuron": "relu"},
        {"name": "lrn2", "type": "lrn", "inputs": "conv2", "groups": 2, **LRN},
        {"name": "pool2", "type": "pool", "inputs": "lrn2"},
        {"name": "conv3", "type": "conv", "inputs": "pool2", "filters": 2 * F["conv3"], "size": 3,
         "pad": 1, "neuron": "relu"},
        {"name": "conv4", "type": "conv", "inputs": "conv3", "filters": 2 * F["conv4"], "size": 3,
         "pad": 1, "groups": 2, "neuron": "relu"},
        {"name": "conv5", "type": "conv", "inputs": "conv4", "filters": 2 * F["conv5"], "size": 3,
         "pad": 1, "groups": 2, "neuron": "relu"},
        {"name": "pool5", "type": "pool", "inputs": "conv5"},
        {"name": "fc6", "type": "fc", "inputs": "pool5", "outputs": 2 * F["fc6"], "neuron": "relu"},
        {"name": "drop6", "type": "dropout", "inputs": "fc6", "p": p},
        {"name": "fc7", "type": "fc", "inputs": "drop6", "outputs": 2 * F["fc7"], "neuron": "relu"},
        {"name": "drop7", "type": "dropout", "inputs": "fc7", "p": p},
        {"name": "fc8", "type": "fc", "inputs": "drop7", "outputs": CLASSES},
        {"name": "loss", "type": "softmax_loss", "inputs": "fc8"},
    ]
    return {"name": "mini-grouped", "LAYERS": L, "HYPER": HYPER}


def to_grouped(state):
    """Two-column weights -> the grouped net's: column a's filters first, then column b's."""
    out = {}
    for layer in GROUPED:
        for k in ("w", "b"):
            if layer == "fc8":
                out[f"fc8.{k}"] = state[f"fc8.{k}"]
            else:
                out[f"{layer}.{k}"] = np.concatenate([state[f"{layer}a.{k}"], state[f"{layer}b.{k}"]])
    return out


def grads_of(net):
    return {p.name: np.asarray(p.grad.get() if hasattr(p.grad, "get") else p.grad) for p in net.params()}


def batch(dtype):
    rng = np.random.default_rng(5)
    return rng.standard_normal((N,) + INPUT).astype(dtype), np.array([0, 6, 3], dtype=np.int32)


def run_step(net, x, labels, train):
    logits = net.forward(x, train=train)
    loss = net.loss(logits, labels)
    net.backward()
    logits = logits.get() if hasattr(logits, "get") else logits
    return np.asarray(logits), loss, grads_of(net)


def compare_two_columns_with_grouped(devices, dtype, tol, p=0.5, train=False):
    """The two-column net on `devices` (a spec: its columns go to them in turn) against the
    grouped one-column net on the first of them."""
    two = Net(two_columns(p), devices=B.parse(devices), dtype=dtype, seed=3)
    one = Net(grouped(p), devices=B.parse(devices)[0], dtype=dtype, seed=99)
    one.load_state_dict(to_grouped(two.state_dict()))
    x, labels = batch(dtype)
    logits2, loss2, g2 = run_step(two, x, labels, train)
    logits1, loss1, g1 = run_step(one, x, labels, train)
    scale = np.abs(logits1).max()
    assert scale > 1e-3                                     # the net does something
    assert np.abs(logits2 - logits1).max() <= tol * scale
    assert loss2 == pytest.approx(loss1, rel=tol)
    for name, g in to_grouped(g2).items():
        err = np.abs(g - g1[name]).max() / max(np.abs(g1[name]).max(), 1e-30)
        assert err <= tol, f"gradient of {name}: relative difference {err:.2e}"
    return two, one


def test_two_columns_equal_grouped_numpy_float64():
    compare_two_columns_with_grouped("cpu", np.float64, 1e-12)


def test_two_columns_equal_grouped_numpy_train_without_dropout():
    compare_two_columns_with_grouped("cpu", np.float64, 1e-12, p=0.0, train=True)


def test_two_columns_equal_grouped_numpy_float32_host_copies():
    """Both columns on the host: the crossings are host copies."""
    two, _ = compare_two_columns_with_grouped("cpu", np.float32, 2e-5)
    assert "host" in two.summary() and "peer-to-peer" not in two.summary()


def test_crossings_of_the_two_column_graph():
    net = Net(two_columns(), materialize=False)
    assert net.crossings() == [("data", "conv1b"), ("pool2b", "conv3a"), ("pool2a", "conv3b"),
                               ("pool5b", "fc6a"), ("pool5a", "fc6b"), ("drop6b", "fc7a"),
                               ("drop6a", "fc7b"), ("drop7b", "fc8")]


def test_whole_two_column_net_gradients_float64():
    """Finite differences through every crossing: concatenation, copies, fan-out sums, dropout."""
    net = Net(two_columns(p=0.5), dtype=np.float64, seed=1)
    x, labels = batch(np.float64)
    names = ["conv1b.w", "conv2a.b", "conv3a.w", "conv5b.w", "fc6b.w", "fc7a.w", "fc8.w"]
    params = {p.name: p for p in net.params()}
    start = {n: params[n].value.copy() for n in names}

    def loss(**t):
        for n in names:
            params[n].value = t[n]
        net.set_step(7)                    # the same dropout masks on every evaluation
        return net.loss(net.forward(x, train=True), labels)

    def back(dy, y, **t):
        loss(**t)
        net.backward()
        return {n: dy * params[n].grad for n in names}

    check_gradients(loss, back, start, tol=1e-6, max_points=12, name="two-column net")


def _emu_built():
    try:
        from convnet import kernels
    except ImportError:
        return False
    return kernels.emulation_available()


@pytest.mark.skipif(not _emu_built(), reason="the CUDA emulation (convnet._emu) is not built: run make")
def test_two_columns_equal_grouped_on_emulation():
    compare_two_columns_with_grouped("emu", np.float32, 1e-4, p=0.0, train=True)
    two, _ = compare_two_columns_with_grouped("emu:0,1", np.float32, 1e-4, p=0.5, train=False)
    assert "emulated peer copy" in two.summary()
    assert {p.value.device.id for p in two.params()} == {0, 1}
    # and with dropout in training, the emulated kernels agree with the NumPy reference
    two = Net(two_columns(0.5), devices=B.emu(), seed=3)
    ref = Net(two_columns(0.5), dtype=np.float32, seed=3)
    x, labels = batch(np.float32)
    two.set_step(0)
    ref.set_step(0)
    logits_e, loss_e, g_e = run_step(two, x, labels, True)
    logits_r, loss_r, g_r = run_step(ref, x, labels, True)
    np.testing.assert_allclose(logits_e, logits_r, rtol=1e-4, atol=1e-4 * np.abs(logits_r).max())
    assert loss_e == pytest.approx(loss_r, rel=1e-4)
    for name in g_r:
        err = np.abs(g_e[name] - g_r[name]).max() / max(np.abs(g_r[name]).max(), 1e-30)
        assert err <= 1e-3, f"{name}: {err:.2e}"


@pytest.mark.gpu
def test_two_columns_on_one_gpu_match_numpy():
    two, _ = compare_two_columns_with_grouped("cuda:0", np.float32, 1e-4, p=0.0, train=True)
    assert "same device" in two.summary()
    ref = Net(two_columns(0.0), seed=3)
    x, labels = batch(np.float32)
    logits_g, loss_g, g_g = run_step(two, x, labels, True)
    logits_r, loss_r, g_r = run_step(ref, x, labels, True)
    np.testing.assert_allclose(logits_g, logits_r, rtol=1e-4, atol=1e-4 * np.abs(logits_r).max())
    for name in g_r:
        err = np.abs(g_g[name] - g_r[name]).max() / max(np.abs(g_r[name]).max(), 1e-30)
        assert err <= 1e-3, f"{name}: {err:.2e}"


@pytest.mark.gpu
def test_two_columns_on_two_gpus():
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    two, _ = compare_two_columns_with_grouped("cuda:0,1", np.float32, 1e-4)
    text = two.summary()
    assert "peer-to-peer" in text or "staged" in text
    assert {p.device.id for p in two.params()} == {0, 1}
    assert {p.value.device.id for p in two.params()} == {0, 1}


# --- the GPU placement code, run against a stand-in for CuPy ----------------
# There may be no GPU where the tests run; this fake records what Placement asks
# of CuPy (devices, streams, events, peer copies) and moves NumPy data, so the
# GPU-only code paths are at least executed and their decisions checked.

class _FakeArray:
    def __init__(self, fake, a):
        self.fake, self.a = fake, np.ascontiguousarray(a)
        self.device = _FakeDevice(fake, fake.current)
        self.data = types.SimpleNamespace(ptr=id(self))
        fake.memory[id(self)] = self

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    nbytes = property(lambda self: self.a.nbytes)

    def set(self, host, stream=None):
        self.fake.log.append(("set", self.device.id, stream.device if stream else None))
        self.a[...] = host

    def get(self):
        return self.a.copy()


class _FakeDevice:
    def __init__(self, fake, i):
        self.fake, self.id = fake, i

    def __enter__(self):
        self.saved = self.fake.current
        self.fake.current = self.id
        return self

    def __exit__(self, *exc):
        self.fake.current = self.saved

    def synchronize(self):
        pass


class _FakeStream:
    def __init__(self, fake, non_blocking=False):
        self.fake, self.device, self.ptr = fake, fake.current, 1000 + len(fake.streams)
        fake.streams.append(self)

    def __enter__(self):
        if self.fake.current != self.device:      # CuPy refuses a stream of another device
            raise RuntimeError(f"stream of device {self.device} used on device {self.fake.current}")
        self.fake.stream_stack.append(self)
        return self

    def __exit__(self, *exc):
        self.fake.stream_stack.pop()

    def record(self):
        assert self.fake.current == self.device, "event recorded on a stream of another device"
        self.fake.log.append(("record", self.ptr))
        return types.SimpleNamespace(stream=self.ptr, synchronize=lambda: None)

    def wait_event(self, event):
        self.fake.log.append(("wait", self.ptr, event.stream))

    def synchronize(self):
        self.fake.log.append(("sync", self.ptr))


class _FakeCupy(types.ModuleType):
    def __init__(self, n_gpus, peer):
        super().__init__("cupy")
        self.current, self.memory, self.log, self.streams, self.stream_stack = 0, {}, [], [], []
        fake = self

        class Runtime:
            memcpyDeviceToDevice = 3
            CUDARuntimeError = RuntimeError

            def getDeviceCount(self):
                return n_gpus

            def getDevice(self):
                return fake.current

            def deviceCanAccessPeer(self, device, peer_device):
                return int(peer)

            def deviceEnablePeerAccess(self, peer_device):
                fake.log.append(("enable", fake.current, peer_device))

            def memcpyPeerAsync(self, dst, dst_dev, src, src_dev, size, stream):
                fake.log.append(("peer", dst_dev, src_dev, stream))
                assert fake.memory[dst].device.id == dst_dev and fake.memory[src].device.id == src_dev
                fake.memory[dst].a[...] = fake.memory[src].a

            def memcpyPeer(self, dst, dst_dev, src, src_dev, size):
                self.memcpyPeerAsync(dst, dst_dev, src, src_dev, size, None)

            def memcpyAsync(self, dst, src, size, kind, stream):
                fake.log.append(("d2d", stream))
                fake.memory[dst].a[...] = fake.memory[src].a

        self.ndarray = _FakeArray
        self.cuda = types.SimpleNamespace(
            runtime=Runtime(), Device=lambda i: _FakeDevice(fake, i),
            Stream=lambda non_blocking=False: _FakeStream(fake, non_blocking),
            get_current_stream=lambda: fake.stream_stack[-1] if fake.stream_stack else types.SimpleNamespace(
                record=lambda: types.SimpleNamespace(stream=("caller", fake.current), synchronize=lambda: None),
                wait_event=lambda event: fake.log.append(("wait", ("caller", fake.current), event.stream))))

    def empty(self, shape, dtype):
        return _FakeArray(self, np.empty(shape, dtype))

    def asarray(self, x, dtype=None):
        return x if isinstance(x, _FakeArray) and dtype in (None, x.dtype) else \
            _FakeArray(self, np.asarray(x.a if isinstance(x, _FakeArray) else x, dtype=dtype))

    def ascontiguousarray(self, x, dtype=None):
        return self.asarray(x, dtype)

    def asnumpy(self, x, stream=None):
        self.log.append(("to host", x.device.id, stream.ptr if stream else None))
        return x.a.copy()


@pytest.fixture
def fake_cupy(monkeypatch):
    def install(n_gpus=2, peer=True):
        fake = _FakeCupy(n_gpus, peer)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        monkeypatch.setattr(B, "_devices", {})      # device objects made with the fake, not a real CuPy
        return fake
    return install


@pytest.mark.parametrize("devices,peer,kind", [([0, 1], True, "peer-to-peer"), ([0, 1], False, "staged"),
                                               ([1], True, "same device")])
def test_placement_transfers_on_gpus(fake_cupy, devices, peer, kind):
    from convnet.devices import Placement
    fake = fake_cupy(n_gpus=2, peer=peer)
    pl = Placement(B.parse("cuda:" + ",".join(map(str, devices))), columns=[0, 1])
    assert [s.device for s in pl.streams.values()] == [devices[0], devices[-1]]
    assert pl.copy_kind(0, 1) == kind and pl.copy_kind(1, 1) == "same device"
    with fake.cuda.Device(devices[0]):
        x = fake.asarray(np.arange(12.0).reshape(3, 4))
    y = pl.transfer(x, 0, 1)
    assert y.device.id == devices[-1] and np.array_equal(y.a, x.a) and y is not x
    s0, s1 = pl.streams[0].ptr, pl.streams[1].ptr
    if kind == "peer-to-peer":
        assert ("enable", 1, 0) in fake.log and ("wait", s1, s0) in fake.log
        assert ("peer", 1, 0, s1) in fake.log and pl._in_flight == [x]
    elif kind == "staged":
        assert ("to host", 0, s0) in fake.log and ("sync", s0) in fake.log and ("set", 1, 1) in fake.log
    else:
        assert ("wait", s1, s0) in fake.log and ("d2d", s1) in fake.log
    pl.end_backward()                         # no host wait: the streams wait for each other
    assert pl._in_flight == []
    assert ("wait", s0, s1) in fake.log and ("wait", s1, s0) in fake.log
    with pl.context(1):                       # the column's device and stream become current
        assert fake.current == devices[-1] and fake.stream_stack == [pl.streams[1]]
    pl.begin()                               # each stream waits for the caller's stream on its GPU
    assert ("wait", s0, ("caller", devices[0])) in fake.log and ("wait", s1, ("caller", devices[-1])) in fake.log
    h = pl.to_device(np.ones((2, 2)), 1, np.float32)
    assert h.device.id == devices[-1] and h.dtype == np.float32


def test_placement_errors_and_input_from_another_gpu(fake_cupy):
    from convnet.devices import Placement
    fake = fake_cupy(n_gpus=2)
    with pytest.raises(ValueError, match="GPU 2 requested but 2 GPU"):
        Placement(B.parse("cuda:0,2"))
    pl = Placement(B.parse("cuda:1"), columns=[0])
    with fake.cuda.Device(0):
        x = fake.asarray(np.ones((2, 3), np.float32))
    y = pl.to_device(x, 0, np.float32)
    assert y.device.id == 1 and ("peer", 1, 0, None) in fake.log


def test_gpu_summary_says_how_columns_cross(fake_cupy):
    fake_cupy(n_gpus=2, peer=True)
    text = Net("alexnet", devices=B.parse("cuda:0,1"), materialize=False).summary()
    assert "devices gpu0, gpu1" in text
    assert "pool2b (column 1, gpu1) -> conv3a (column 0, gpu0): peer-to-peer" in text
    fake_cupy(n_gpus=2, peer=False)
    assert "fc8 (column 0, gpu0): staged" in Net("alexnet", devices=B.parse("cuda:0,1"),
                                                  materialize=False).summary()
    fake_cupy(n_gpus=1)
    net = Net("alexnet", devices=B.cuda(0), materialize=False)
    assert net.summary().count(": same device") == 8
    assert {p.device.id for p in net.params()} == {0}
