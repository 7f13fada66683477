"""kernels/fused.cu: what the case table (tests/test_kernels.py) does not say.

The fused kernels equal the unfused kernel sequences on the emulation, ties
included (ReLU zeros, repeated values); the unfused reference compositions
they are checked against are the gradients of their forwards (finite
differences in float64); bad arguments fail with one clear line.
"""
import numpy as np
import pytest

from convnet import backend as B
from convnet.gradcheck import check_gradients
from convnet import reference
from convnet.kernel_ops import fused


def _emu_built():
    try:
        from convnet import kernels
    except ImportError:
        return False
    return kernels.emulation_available()


emu = pytest.mark.skipif(not _emu_built(), reason="the CUDA emulation (convnet._emu) is not built: run make")
LRN = dict(size=5, alpha=0.1, beta=0.75, k=2.0)


def _relu_like(rng, shape):
    """ReLU outputs with many exact zeros and repeated positive values: ties everywhere."""
    x = np.maximum(rng.integers(-3, 4, size=shape), 0).astype(np.float32)
    x[..., ::3] += rng.standard_normal(x[..., ::3].shape).astype(np.float32) * 0.5
    x = np.maximum(x, 0)
    x[0, :, :5, :5] = 0.0          # windows of zeros
    x[1, :, :5, :5] = 1.5          # windows of equal positive values
    return x


@emu
@pytest.mark.parametrize("shape,pool,groups", [((3, 5, 13, 11), (3, 2), 1), ((3, 7, 12, 12), (3, 2), 1),
                                               ((2, 6, 9, 7), (2, 2), 3)])
def test_lrn_maxpool_equals_unfused_kernels_with_ties(shape, pool, groups):
    from convnet.kernel_ops import lrn, pool as P
    rng = np.random.default_rng(1)
    x = _relu_like(rng, shape)
    ps, st = pool
    y, arg = fused.lrn_maxpool_forward(x, **LRN, pool_size=ps, pool_stride=st, groups=groups)
    # the unfused kernels, block by block for groups
    parts = np.split(x, groups, axis=1)
    z = np.concatenate([lrn.lrn_forward(np.ascontiguousarray(p), **LRN) for p in parts], axis=1)
    y_ref = P.maxpool_forward(z, ps, st)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(arg, reference.window_argmax(z, ps, st))
    assert (y[0, :, 0, 0] == 0).all() and (arg[:2, :, 0, 0] == 0).all()   # ties: the first wins
    assert (arg > 0).any()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = fused.lrn_maxpool_backward(dy, x, arg, **LRN, pool_size=ps, pool_stride=st, groups=groups)
    dz = P.maxpool_backward(dy, z, y_ref, ps, st)
    dx_ref = np.concatenate([lrn.lrn_backward(*(np.ascontiguousarray(a) for a in abc), **LRN)
                             for abc in zip(np.split(dz, groups, 1), parts, np.split(z, groups, 1))], axis=1)
    scale = np.abs(dx_ref).max()
    assert scale > 0
    assert np.abs(dx - dx_ref).max() <= 1e-6 * scale


def test_reference_composition_gradient_float64():
    """The unfused reference gradient the kernels are checked against is the gradient of
    maxpool(lrn(x)) (finite differences, float64; inputs without near-ties)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 7, 6)) * 2.0
    params = dict(size=3, alpha=0.3, beta=0.75, k=1.0, pool_size=3, pool_stride=2, groups=2)

    def fwd(x):
        return reference.lrn_maxpool_forward(x, **params)[0]

    def bwd(dy, y, x):
        arg = reference.lrn_maxpool_forward(x, **params)[1]
        return {"x": reference.lrn_maxpool_backward(dy, x, arg, **params)}

    check_gradients(fwd, bwd, {"x": x}, tol=1e-6, name="maxpool(lrn(x))")


def test_relu_dropout_reference_gradient_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 37))
    x[np.abs(x) < 1e-3] = 0.5                          # no kinks within eps
    p, seed = 0.4, 77

    def fwd(x):
        return reference.relu_dropout_forward(x, p, seed)

    def bwd(dy, y, x):
        return {"x": reference.relu_dropout_backward(dy, y, p)}

    check_gradients(fwd, bwd, {"x": x}, tol=1e-6, name="dropout(relu(x))")


@emu
def test_relu_dropout_equals_unfused_kernels():
    from convnet.kernel_ops import activation, dropout
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 203)).astype(np.float32)
    x[0, :7] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-40]
    p, seed = 0.5, 2 ** 63 + 12345
    y = fused.relu_dropout_forward(x, p, seed)
    r = activation.relu_forward(x)
    np.testing.assert_array_equal(y, dropout.dropout_forward(r, p, seed))
    mask = dropout.dropout_mask(x.shape, p, seed, like=x)
    assert 0.3 < mask.mean() < 0.7
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = fused.relu_dropout_backward(dy, y, p)
    np.testing.assert_array_equal(dx, activation.relu_backward(dropout.dropout_backward(dy, p, seed), r))
    assert np.all(dx[~mask] == 0) and np.any(dx[mask] != 0)


@emu
def test_bad_arguments():
    x = np.zeros((2, 4, 7, 7), np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        fused.lrn_maxpool_forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="divisible by groups=3"):
        fused.lrn_maxpool_forward(x, groups=3)
    with pytest.raises(ValueError, match="pool_size 17 is too large"):
        fused.lrn_maxpool_forward(np.zeros((1, 1, 17, 17), np.float32), pool_size=17)
    with pytest.raises(ValueError, match="pooling window 9 is larger than the input 7"):
        fused.lrn_maxpool_forward(x, pool_size=9)   # larger than the image
    y, arg = fused.lrn_maxpool_forward(x)
    with pytest.raises(TypeError, match="arg must be the uint8 array"):
        fused.lrn_maxpool_backward(y, x, arg.astype(np.int32))
    with pytest.raises(ValueError, match="dy has shape"):
        fused.lrn_maxpool_backward(np.ascontiguousarray(y[:, :, :2]), x, arg)
    with pytest.raises(ValueError, match=r"p must|\[0, 1\)"):
        fused.relu_dropout_forward(x, 1.0, 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        fused.relu_dropout_forward(x, 0.5, 1.5)
    with pytest.raises(ValueError, match="same shape"):
        fused.relu_dropout_backward(x, x[:1], 0.5)


# --- the network uses the fused kernels ----------------------------------------

def _step(net, x, labels, train, step=0):
    net.set_step(step)
    logits = net.forward(x, train=train)
    loss = net.loss(logits, labels)
    net.backward()
    return np.asarray(logits), loss, {p.name: np.asarray(p.grad) for p in net.params()}


@emu
@pytest.mark.parametrize("train", [True, False])
def test_fused_net_equals_unfused_net_on_emulation(train):
    """A small two-column AlexNet-shaped net (lrn->pool twice per column, fc relu->dropout
    twice per column; LRN alpha large enough to matter): the same logits, loss and
    gradients with and without fusion, training (dropout active) and not."""
    from test_columns import batch, two_columns
    from convnet.net import Net
    fused_net = Net(two_columns(0.5), devices=B.emu(), seed=3)
    plain = Net(two_columns(0.5), devices=B.emu(), seed=3, fuse=False)
    pairs = sorted([(f"lrn{i}{c}", f"pool{i}{c}") for i in (1, 2) for c in "ab"]
                   + [(f"fc{i}{c}", f"drop{i}{c}") for i in (6, 7) for c in "ab"])
    assert plain.fusions == [] and sorted(fused_net.fusions) == pairs
    assert sorted(Net(two_columns(0.5), seed=3).fusions) == pairs      # the same rewrite on the host
    assert "fused layers: " in fused_net.summary() and "fused" not in plain.summary()
    x, labels = batch(np.float32)
    lf, loss_f, gf = _step(fused_net, x, labels, train)
    lp, loss_p, gp = _step(plain, x, labels, train)
    assert np.abs(lp).max() > 1e-3
    np.testing.assert_allclose(lf, lp, rtol=0, atol=1e-5 * np.abs(lp).max())
    assert loss_f == pytest.approx(loss_p, rel=1e-5)
    for name in gp:
        scale = np.abs(gp[name]).max()
        assert scale > 0, name
        err = np.abs(gf[name] - gp[name]).max() / scale
        assert err <= 1e-5, f"gradient of {name}: relative difference {err:.2e}"
    # the fused layers ran in place of the pairs: no lrn or dropout layer is left in the graph
    kinds = {node.name: node.kind for node in fused_net.nodes}
    assert kinds["pool1a"] == "lrn+pool" and kinds["drop6a"] == "relu+dropout" and kinds["fc6a"] == "fc"
    assert "lrn1a" not in kinds and not {"lrn", "dropout"} & set(kinds.values())
    by_name = {node.name: node for node in fused_net.nodes}
    assert by_name["pool1a"].arg is not None and by_name["drop6a"]._dropped == train
    assert by_name["fc6a"].params["w"] is fused_net.layers["fc6a"].params["w"]   # the same weights


@emu
def test_relu_layer_fused_into_dropout():
    """A standalone relu layer before a dropout fuses too; a relu with two consumers does not."""
    from convnet.net import Net
    L = [{"name": "data", "type": "data", "shape": [11]},
         {"name": "fc1", "type": "fc", "inputs": "data", "outputs": 9},
         {"name": "relu1", "type": "relu", "inputs": "fc1"},
         {"name": "drop1", "type": "dropout", "inputs": "relu1", "p": 0.4},
         {"name": "fc2", "type": "fc", "inputs": "drop1", "outputs": 6, "neuron": "relu"},
         {"name": "fc3", "type": "fc", "inputs": "fc2", "outputs": 3},
         {"name": "fc4", "type": "fc", "inputs": "fc2", "outputs": 3},
         {"name": "fc5", "type": "fc", "inputs": ["fc3", "fc4"], "outputs": 4}]
    cfg = {"name": "mlp", "LAYERS": L, "HYPER": {"init_std": 0.3, "bias_init": 0.1}}
    a, b = Net(cfg, devices=B.emu(), seed=1), Net(cfg, devices=B.emu(), seed=1, fuse=False)
    assert a.fusions == [("relu1", "drop1")]
    x = np.random.default_rng(0).standard_normal((5, 11)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1], np.int32)
    la, _, ga = _step(a, x, labels, True, step=4)
    lb, _, gb = _step(b, x, labels, True, step=4)
    np.testing.assert_allclose(la, lb, rtol=1e-6, atol=1e-6)
    for name in gb:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-5, atol=1e-6 * np.abs(gb[name]).max())
