"""convnet.backend: device objects, emulated devices that behave like GPUs where it matters
(arrays carry their device; new arrays land on the current one; mixing devices fails),
the ops on a device, and the fusion pass (fused layers equal the unfused pairs)."""
import numpy as np
import pytest

from convnet import backend as B
from convnet import kernels, ops, reference
from convnet.net import Net

emu = pytest.mark.skipif(not kernels.emulation_available(),
                         reason="the CUDA emulation (convnet._emu) is not built: run make")


def test_one_object_per_device_and_specs():
    assert B.emu(1) is B.emu(1) and B.emu(0) is not B.emu(1)
    assert B.parse("cpu") == [B.cpu()] and B.parse("numpy") == [B.cpu()]
    assert B.parse("emu") == [B.emu(0)] and B.parse("emu:1,0") == [B.emu(1), B.emu(0)]
    assert [d.name for d in B.parse("emu:0,1")] == ["emu0", "emu1"]
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        B.parse("tpu")
    with pytest.raises(ValueError, match="listed twice"):
        B.parse("emu:1,1")
    with pytest.raises(ValueError, match="comma-separated ints"):
        B.parse("emu:a")
    if B.gpu_count() == 0:
        with pytest.raises(ValueError, match="no CUDA GPU found"):
            B.parse("cuda:0")


def test_emulated_arrays_follow_cupy_placement_rules():
    e0, e1 = B.emu(0), B.emu(1)
    a = e1.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert a.device is e1 and B.of(a) is e1
    assert a.reshape(3, 2).device is e1 and a[:, 1:].device is e1      # views stay where they are
    assert a.copy().device is e0                                       # a copy lands on the current device
    with pytest.raises(ValueError, match="emulated device 1 but the current device is 0"):
        a + 1
    with e1.context():
        b = a * 2 + 1
        assert b.device is e1 and np.array_equal(B.to_host(b), np.arange(6).reshape(2, 3) * 2 + 1)
        assert np.concatenate([a, b]).device is e1
        c = e0.asarray(a)                                              # the explicit copy between devices
    assert c.device is e0 and np.array_equal(B.to_host(c), B.to_host(a))
    with pytest.raises(ValueError, match="two devices"):
        B.of(a, c)
    assert type(B.to_host(a)) is np.ndarray


@emu
def test_ops_and_kernels_refuse_arrays_of_another_device():
    x1 = B.emu(1).asarray(np.ones((2, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="on emu1 was given to an op on emu0"):
        ops.relu_forward(x1, backend=B.emu(0))
    with B.emu(1).context():
        y = ops.relu_forward(x1)                                       # the device of its arrays
    assert y.device is B.emu(1)
    from convnet.kernel_ops import activation
    dy0 = B.emu(0).asarray(np.ones((2, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="one device"):
        activation.relu_backward(dy0, y)
    f = kernels.get_function("relu_fwd", like=x1)
    with pytest.raises(ValueError, match="on emulated device 0, the kernel on emulated device 1"):
        f(1, 32, (x1, dy0, x1.size))
    with pytest.raises(TypeError, match="backend must be a device"):
        ops.relu_forward(np.ones(3, np.float32), backend="emu")


def test_pool_layer_with_stride_larger_than_size_builds_and_runs():
    cfg = {"name": "p", "LAYERS": [{"name": "data", "type": "data", "shape": [2, 5, 5]},
                                   {"name": "pool", "type": "pool", "inputs": "data", "size": 1, "stride": 3},
                                   {"name": "fc", "type": "fc", "inputs": "pool", "outputs": 3}],
           "HYPER": {}}
    net = Net(cfg, seed=0)
    assert net.layers["pool"].out_shape == (2, 2, 2)                   # windows at 0 and 3, none at 6
    x = np.arange(50, dtype=np.float32).reshape(1, 2, 5, 5)
    net.forward(x, train=False)
    np.testing.assert_array_equal(net._acts["pool"], x[:, :, ::3, ::3])


def _fusable(p=0.5):
    """conv -> relu layer, lrn -> max pool, fc (ReLU) -> dropout, relu layer -> dropout."""
    L = [{"name": "data", "type": "data", "shape": [3, 11, 11]},
         {"name": "conv1", "type": "conv", "inputs": "data", "filters": 6, "size": 3},
         {"name": "relu1", "type": "relu", "inputs": "conv1"},
         {"name": "lrn1", "type": "lrn", "inputs": "relu1", "size": 3, "alpha": 0.3, "groups": 2},
         {"name": "pool1", "type": "pool", "inputs": "lrn1", "size": 3, "stride": 2},
         {"name": "fc2", "type": "fc", "inputs": "pool1", "outputs": 9, "neuron": "relu"},
         {"name": "drop2", "type": "dropout", "inputs": "fc2", "p": p},
         {"name": "fc3", "type": "fc", "inputs": "drop2", "outputs": 8},
         {"name": "relu3", "type": "relu", "inputs": "fc3"},
         {"name": "drop3", "type": "dropout", "inputs": "relu3", "p": p},
         {"name": "fc4", "type": "fc", "inputs": "drop3", "outputs": 4}]
    return {"name": "fusable", "LAYERS": L, "HYPER": {"init_std": 0.3, "bias_init": 0.1}}


def _step(net, x, labels, train):
    net.set_step(5)
    logits = net.forward(x, train=train)
    loss = net.loss(logits, labels)
    net.backward()
    return B.to_host(logits), loss, {p.name: B.to_host(p.grad) for p in net.params()}


@pytest.mark.parametrize("train", [True, False])
def test_fusion_pass_on_the_host_equals_unfused_float64(train):
    fused, plain = Net(_fusable(), seed=4, dtype=np.float64), Net(_fusable(), seed=4, dtype=np.float64, fuse=False)
    assert fused.fusions == [("conv1", "relu1"), ("lrn1", "pool1"), ("fc2", "drop2"), ("relu3", "drop3")]
    kinds = [n.kind for n in fused.nodes]
    assert kinds == ["conv", "lrn+pool", "fc", "relu+dropout", "fc", "relu+dropout", "fc"]
    assert [n.kind for n in plain.nodes] == [fused.layers[n].kind for n in plain.run_order]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 11, 11))
    labels = np.array([0, 1, 2, 3], np.int32)
    lf, sf, gf = _step(fused, x, labels, train)
    lp, sp, gp = _step(plain, x, labels, train)
    np.testing.assert_allclose(lf, lp, rtol=1e-12, atol=1e-12)
    assert sf == pytest.approx(sp, rel=1e-12)
    for name in gp:
        np.testing.assert_allclose(gf[name], gp[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_fusion_only_where_the_pattern_and_placement_allow():
    cfg = _fusable()
    L = {l["name"]: l for l in cfg["LAYERS"]}
    L["fc4"]["inputs"] = ["drop3", "lrn1"]        # lrn1 now has two readers: lrn1+pool1 stays apart
    for name in ("fc2", "drop2"):                 # the fc and its dropout on different columns
        L[name]["column"] = 1 if name == "drop2" else 0
    net = Net(cfg, seed=0, materialize=False)
    assert net.fusions == [("conv1", "relu1"), ("relu3", "drop3")]


@emu
def test_fused_references_are_what_the_fused_kernels_compute():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    kw = dict(size=3, alpha=0.2, beta=0.75, k=1.0, pool_size=3, pool_stride=2, groups=2)
    with B.emu().context():
        y, arg = ops.lrn_maxpool_forward(B.emu().asarray(x), backend=B.emu(), **kw)
    ry, rarg = reference.lrn_maxpool_forward(x, **kw)
    np.testing.assert_allclose(B.to_host(y), ry, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(B.to_host(arg), rarg)
