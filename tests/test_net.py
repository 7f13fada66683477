"""Net: shipped configs and their counts, config loading, build-time validation,
initialisation, the training step, dropout steps, and state dicts."""
import copy
import math

import numpy as np
import pytest

from convnet import backend as B
from convnet import reference as R
from convnet.configs import available, load_config
from convnet.net import Net


def small(**hyper):
    """A small single-column net: conv -> pool -> lrn -> conv(tanh) -> avg pool -> fc relu -> dropout -> fc."""
    layers = [
        {"name": "data", "type": "data", "shape": [3, 13, 11]},
        {"name": "conv1", "type": "conv", "inputs": "data", "filters": 5, "size": 3, "pad": 1, "neuron": "relu"},
        {"name": "pool1", "type": "pool", "inputs": "conv1", "mode": "max", "size": 3, "stride": 2},
        {"name": "norm1", "type": "lrn", "inputs": "pool1", "size": 3, "alpha": 0.1},
        {"name": "conv2", "type": "conv", "inputs": "norm1", "filters": 6, "size": 3, "neuron": "tanh"},
        {"name": "pool2", "type": "pool", "inputs": "conv2", "mode": "avg", "size": 2, "stride": 2},
        {"name": "fc1", "type": "fc", "inputs": "pool2", "outputs": 9, "neuron": "relu"},
        {"name": "drop1", "type": "dropout", "inputs": "fc1", "p": 0.5},
        {"name": "fc2", "type": "fc", "inputs": "drop1", "outputs": 4},
        {"name": "loss", "type": "softmax_loss", "inputs": "fc2"},
    ]
    return {"name": "small", "LAYERS": layers, "HYPER": {"init_std": 0.3, **hyper}}


def data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 13, 11)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


# --- shipped configs -------------------------------------------------------

def conv_params(f, c, k):
    return f * c * k * k + f


def test_alexnet_counts_and_summary():
    net = Net("alexnet", materialize=False)          # shapes only: no 240 MB of weights
    # the paper's network, counted independently from its table (two columns summed)
    expected = (conv_params(96, 3, 11) + conv_params(256, 48, 5) + conv_params(384, 256, 3)
                + conv_params(384, 192, 3) + conv_params(256, 192, 3)
                + 4096 * 9216 + 4096 + 4096 * 4096 + 4096 + 1000 * 4096 + 1000)
    assert expected == 60_965_224 and net.num_params == expected
    neurons = 96 * 55 * 55 + 256 * 27 * 27 + 384 * 13 * 13 * 2 + 256 * 13 * 13 + 4096 * 2 + 1000
    assert neurons == 659_272 and net.num_neurons == neurons
    text = net.summary()
    assert "60,965,224 parameters" in text and "659,272 neurons" in text
    shapes = {l.name: l.out_shape for l in net.layers.values()}
    assert shapes["conv1a"] == (48, 55, 55) and shapes["pool1b"] == (48, 27, 27)
    assert shapes["conv2a"] == (128, 27, 27) and shapes["pool2a"] == (128, 13, 13)
    assert shapes["conv3b"] == (192, 13, 13) and shapes["pool5a"] == (128, 6, 6)
    assert shapes["fc6a"] == (2048,) and shapes["fc8"] == (1000,)
    assert net.layers["conv3a"].params["w"].shape == (192, 256, 3, 3)   # reads both columns
    assert net.layers["conv4b"].params["w"].shape == (192, 192, 3, 3)   # own column only
    assert net.layers["fc6b"].params["w"].shape == (2048, 9216)
    assert len(net.crossings()) == 8 and "host" in text
    assert len([l for l in text.splitlines() if l.startswith(("conv", "fc"))]) == 15


def test_alexnet_hyper_and_init_rules():
    net = Net("alexnet", materialize=False)
    hyper = {p.name: p.hyper for p in net.params()}
    assert all(h == {"lr_mult": 1.0, "weight_decay": 0.0005, "momentum": 0.9} for h in hyper.values())
    bias = {n: net._layer_hyper(n)["bias_init"] for n in net.layers if net.layers[n].params}
    ones = {n for n, b in bias.items() if b == 1.0}
    assert ones == {"conv2a", "conv2b", "conv4a", "conv4b", "conv5a", "conv5b",
                    "fc6a", "fc6b", "fc7a", "fc7b", "fc8"}
    assert bias["conv1a"] == bias["conv3b"] == 0.0
    assert {net._layer_hyper(n)["init_std"] for n in bias} == {0.01}


def test_alexnet_1col_counts():
    net = Net("alexnet-1col", materialize=False)
    expected = (conv_params(48, 3, 11) + conv_params(128, 48, 5) + conv_params(192, 128, 3)
                + conv_params(192, 192, 3) + conv_params(128, 192, 3)
                + 2048 * 4608 + 2048 + 2048 * 2048 + 2048 + 1000 * 2048 + 1000)
    assert net.num_params == expected == 16_630_440
    assert net.num_neurons == 48 * 55 * 55 + 128 * 27 * 27 + 192 * 169 * 2 + 128 * 169 + 2048 * 2 + 1000
    assert net.crossings() == []


@pytest.mark.parametrize("name,params", [("cifar-80sec", 145_578), ("cifar-18pct", 89_578)])
def test_cifar_configs_train_a_step(name, params):
    net = Net(name, seed=0)
    assert net.num_params == params
    assert net.layers["data"].out_shape == (3, 32, 32) and net.layers[net.output].out_shape == (10,)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    logits = net.forward(x)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert np.isfinite(net.loss(logits, np.array([1, 9, 0], np.int32)))
    net.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.params())


# --- config loading --------------------------------------------------------

def test_load_config_names_paths_and_errors(tmp_path):
    assert {"alexnet", "alexnet-1col", "cifar-80sec", "cifar-18pct"} <= set(available())
    cfg = load_config("cifar-18pct")
    assert cfg["name"] == "cifar-18pct" and cfg["HYPER"]["lr"] == 0.001
    cfg["LAYERS"].clear()
    assert load_config("cifar-18pct")["LAYERS"]                 # a copy, not the module's list
    assert load_config("alexnet_1col")["name"] == "alexnet-1col"
    with pytest.raises(ValueError, match=r"unknown config 'nope': choose one of .*alexnet"):
        load_config("nope")
    path = tmp_path / "mine.py"
    path.write_text("LAYERS = " + repr(small()["LAYERS"]) + "\nHYPER = {'lr': 0.5}\n")
    cfg = load_config(str(path))
    assert cfg["name"] == "mine" and cfg["HYPER"] == {"lr": 0.5} and len(cfg["LAYERS"]) == 10
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="must define LAYERS"):
        load_config(str(tmp_path / "empty.py"))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "missing.py"))


# --- validation at build time ----------------------------------------------

def edit(fn):
    cfg = copy.deepcopy(small())
    fn({l["name"]: l for l in cfg["LAYERS"]}, cfg)
    return cfg


@pytest.mark.parametrize("change,match", [
    (lambda L, c: L["conv2"].update(type="convv"), r"layer 'conv2': unknown type 'convv'"),
    (lambda L, c: L["conv2"].update(inputs="norm9"), r"layer 'conv2': unknown input 'norm9'"),
    (lambda L, c: L["conv1"].update(inputs="pool1"), r"layer '\w+': cycle in the layer graph: "),
    (lambda L, c: L["conv2"].update(size=9), r"layer 'conv2' \(conv\): kernel 9x9 is larger"),
    (lambda L, c: L["conv2"].update(groups=2), r"layer 'conv2' \(conv\): .*divisible by groups=2"),
    (lambda L, c: L["pool2"].update(size=5), r"layer 'pool2' \(pool\): pooling window 5x5 is larger"),
    (lambda L, c: L["fc2"].update(name="fc1"), r"layer 'fc1': duplicate name"),
    (lambda L, c: L["fc1"].update(column=-1), r"layer 'fc1': column must be an int >= 0"),
    (lambda L, c: L["drop1"].update(inputs=["fc1", "fc1"]), r"layer 'drop1': an input is listed twice"),
    (lambda L, c: c["LAYERS"].insert(3, {"name": "side", "type": "relu", "inputs": "pool1"}),
     r"layer 'side': does not lead to the output"),
    (lambda L, c: c["LAYERS"].insert(1, {"name": "data2", "type": "data", "shape": [1]}),
     r"exactly one 'data' layer"),
    (lambda L, c: c["HYPER"].update(layers={"conv9": {"bias_init": 1}}), r"'conv9' matches no layer"),
    (lambda L, c: c["HYPER"].update(layers={"conv1": {"bias": 1}}), r"unknown key 'bias'"),
])
def test_build_errors_are_one_line_and_name_the_layer(change, match):
    with pytest.raises(ValueError, match=match) as e:
        Net(edit(change), materialize=False)
    assert "\n" not in str(e.value)


def test_cycle_message_names_the_cycle():
    cfg = edit(lambda L, c: L["conv1"].update(inputs="pool1"))
    with pytest.raises(ValueError, match=r"conv1 -> pool1 -> conv1|pool1 -> conv1 -> pool1"):
        Net(cfg, materialize=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        Net(small(), devices="gpu")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        Net(small(), seed=-1)
    with pytest.raises(ValueError, match="dtype float64 not supported on emu0"):
        Net(small(), devices=B.emu(), dtype=np.float64)
    with pytest.raises(ValueError, match="devices must be a non-empty list"):
        Net(small(), devices=[])
    net = Net(small())
    with pytest.raises(ValueError, match=r"input must have shape N x 3x13x11, got \(2, 3, 11, 13\)"):
        net.forward(np.zeros((2, 3, 11, 13), np.float32))
    with pytest.raises(RuntimeError, match="needs forward"):
        net.backward()


def test_input_shape_override():
    net = Net(small(), input_shape=(3, 9, 9), materialize=False)
    assert net.layers["data"].out_shape == (3, 9, 9)
    assert net.layers["conv2"].out_shape == (6, 2, 2)


# --- initialisation --------------------------------------------------------

def test_init_same_seed_same_weights_and_hyper_overrides():
    hyper = {"bias_init": 0.0, "layers": {"conv*": {"bias_init": 1.0, "init_std": 0.05},
                                          "conv2": {"lr_mult": 2.0, "bias_weight_decay": 0.0},
                                          "fc2": {"init_std": 0.0}}}
    a, b, c = Net(small(**hyper), seed=4), Net(small(**hyper), seed=4), Net(small(**hyper), seed=5)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "fc1.w", "fc1.b", "fc2.w", "fc2.b"]
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["conv1.w"], sc["conv1.w"])
    assert np.all(sa["conv1.b"] == 1) and np.all(sa["conv2.b"] == 1) and np.all(sa["fc1.b"] == 0)
    assert np.all(sa["fc2.w"] == 0)
    assert sa["fc1.w"].dtype == np.float32
    # weights from N(0, std^2): the drawn standard deviation is close to the configured one
    assert 0.25 < sa["fc1.w"].std() < 0.35 and 0.035 < sa["conv2.w"].std() < 0.065
    p = {q.name: q for q in a.params()}
    assert p["conv2.w"].hyper == {"lr_mult": 2.0, "weight_decay": 0.0005, "momentum": 0.9}
    assert p["conv2.b"].hyper == {"lr_mult": 2.0, "weight_decay": 0.0, "momentum": 0.9}
    assert p["conv1.b"].hyper["lr_mult"] == 1.0 and p["fc1.w"].layer == "fc1"
    assert all(q.device is B.cpu() for q in a.params())


# --- the step --------------------------------------------------------------

def test_forward_loss_backward_matches_hand_composition():
    """The small net's step equals the reference ops composed by hand."""
    net = Net(small(), dtype=np.float64, seed=2)
    x, y = data()
    x = x.astype(np.float64)
    net.set_step(3)
    logits = net.forward(x, train=True)
    loss = net.loss(logits, y)
    net.backward()
    s = net.state_dict()
    seed = net.dropout_seed("drop1", 3)
    h1 = np.maximum(R.conv2d_forward(x, s["conv1.w"], s["conv1.b"], pad=1), 0)
    h2 = R.lrn_forward(R.maxpool_forward(h1, 3, 2), size=3, alpha=0.1)
    h3 = np.tanh(R.conv2d_forward(h2, s["conv2.w"], s["conv2.b"]))
    h4 = R.avgpool_forward(h3, 2, 2).reshape(len(x), -1)
    h5 = R.dropout_forward(np.maximum(R.fc_forward(h4, s["fc1.w"], s["fc1.b"]), 0), 0.5, seed)
    ref = R.fc_forward(h5, s["fc2.w"], s["fc2.b"])
    np.testing.assert_allclose(logits, ref, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(float(R.softmax_cross_entropy(ref, y)[0]), rel=1e-12)
    d = R.softmax_cross_entropy_backward(R.softmax_cross_entropy(ref, y)[1], y)
    grads = {p.name: p.grad for p in net.params()}
    np.testing.assert_allclose(grads["fc2.w"], R.fc_backward_filter(d, h5), rtol=1e-10, atol=1e-14)
    assert net.step == 4


def test_dropout_masks_follow_the_step():
    net = Net(small(), seed=1)
    x, _ = data()
    net.set_step(10)
    a = net.forward(x, train=True)
    assert net.step == 11
    b = net.forward(x, train=True)
    net.set_step(10)
    c = net.forward(x, train=True)
    assert np.array_equal(a, c) and not np.array_equal(a, b)
    t1, t2 = net.forward(x, train=False), net.forward(x, train=False)
    assert np.array_equal(t1, t2) and net.step == 11
    other = Net(small(), seed=2)
    assert net.dropout_seed("drop1", 10) != other.dropout_seed("drop1", 10)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        net.set_step(-1)


def test_gradients_are_overwritten_not_accumulated():
    net = Net(small(), seed=0)
    x, y = data()
    grads = []
    for _ in range(2):
        net.set_step(0)
        net.loss(net.forward(x), y)
        net.backward()
        grads.append({p.name: p.grad.copy() for p in net.params()})
    assert all(np.array_equal(grads[0][k], grads[1][k]) for k in grads[0])


def test_net_without_loss_layer_uses_softmax_cross_entropy():
    cfg = small()
    cfg["LAYERS"] = cfg["LAYERS"][:-1]
    net, ref = Net(cfg, seed=0), Net(small(), seed=0)
    x, y = data()
    assert net.loss(net.forward(x, train=False), y) == ref.loss(ref.forward(x, train=False), y)


# --- state dicts -----------------------------------------------------------

def test_state_dict_round_trip_and_errors():
    a, b = Net(small(), seed=0), Net(small(), seed=1)
    x, _ = data()
    state = a.state_dict()
    state["conv1.w"][...] = 0                     # a copy: changing it leaves the net alone
    assert np.any(a.state_dict()["conv1.w"] != 0)
    values = [p.value for p in b.params()]
    b.load_state_dict(a.state_dict())
    assert all(v is p.value for v, p in zip(values, b.params()))   # loaded in place
    assert np.array_equal(a.forward(x, train=False), b.forward(x, train=False))
    good = a.state_dict()
    with pytest.raises(ValueError, match=r"missing \['fc2.b'\]"):
        b.load_state_dict({k: v for k, v in good.items() if k != "fc2.b"})
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        b.load_state_dict({**good, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"state 'fc1.w' has shape \(9, 5\), the network has \(9, 24\)"):
        b.load_state_dict({**good, "fc1.w": np.zeros((9, 5))})


def test_counts_of_small_net():
    net = Net(small(), materialize=False)
    assert net.num_params == (5 * 27 + 5) + (6 * 45 + 6) + (9 * 24 + 9) + (4 * 9 + 4)
    assert net.num_neurons == 5 * 13 * 11 + 6 * 4 * 3 + 9 + 4
    assert math.prod(net.layers["pool2"].out_shape) == 24
    with pytest.raises(RuntimeError, match="materialize=False"):
        net.forward(data()[0])


def _emu_built():
    try:
        from convnet import kernels
    except ImportError:
        return False
    return kernels.emulation_available()


@pytest.mark.skipif(not _emu_built(), reason="the CUDA emulation (convnet._emu) is not built: run make")
def test_small_net_on_emulation_matches_numpy():
    """Every layer type of the small net (conv relu/tanh, max and avg pooling, LRN, fc, dropout,
    softmax) through the CUDA kernels on the CPU emulation, one training step."""
    emu, ref = Net(small(), devices=B.emu(), seed=6), Net(small(), seed=6)
    x, y = data(n=3)
    out = []
    for net in (emu, ref):
        net.set_step(2)
        logits = net.forward(x, train=True)
        loss = net.loss(logits, y)
        net.backward()
        out.append((logits, loss, {p.name: p.grad for p in net.params()}))
    (le, se, ge), (lr, sr, gr) = out
    np.testing.assert_allclose(le, lr, rtol=1e-4, atol=1e-5 * np.abs(lr).max())
    assert se == pytest.approx(sr, rel=1e-5)
    for k in gr:
        assert ge[k].dtype == np.float32
        err = np.abs(ge[k] - gr[k]).max() / np.abs(gr[k]).max()
        assert err < 1e-4, f"{k}: {err:.2e}"


def test_cuda_backend_without_a_gpu_is_a_clear_error():
    if B.gpu_count():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU found"):
        Net(small(), devices="cuda")
