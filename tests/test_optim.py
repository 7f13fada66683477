"""SGD (the paper's rule, per-parameter settings, state) and the lr schedules."""
from types import SimpleNamespace

import numpy as np
import pytest

from convnet import backend as B
from convnet.optim import SGD, PlateauSchedule, StepSchedule, Schedule, make_schedule


def make_params(rng, dtype=np.float64):
    w = SimpleNamespace(name="conv1.w", value=rng.standard_normal((5, 3, 3, 3)).astype(dtype),
                        grad=None, hyper={})
    b = SimpleNamespace(name="conv1.b", value=rng.standard_normal(5).astype(dtype),
                        grad=None, hyper={"lr_mult": 2.0, "weight_decay": 0.0})
    f = SimpleNamespace(name="fc.w", value=rng.standard_normal((7, 11)).astype(dtype),
                        grad=None, hyper={"momentum": 0.5})
    return [w, b, f]


def test_sgd_follows_the_paper_rule_with_per_parameter_settings():
    rng = np.random.default_rng(0)
    params = make_params(rng)
    expect = {p.name: (p.value.copy(), np.zeros_like(p.value)) for p in params}
    settings = {"conv1.w": (0.01, 0.9, 5e-4), "conv1.b": (0.02, 0.9, 0.0), "fc.w": (0.01, 0.5, 5e-4)}
    opt = SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        for p in params:
            p.grad = rng.standard_normal(p.value.shape)
            lr, mom, wd = settings[p.name]
            w, v = expect[p.name]
            v = mom * v - wd * lr * w - lr * p.grad      # v <- m v - wd eps w - eps dw
            expect[p.name] = (w + v, v)
        opt.step()
    for p in params:
        np.testing.assert_allclose(p.value, expect[p.name][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.velocity[p.name], expect[p.name][1], rtol=1e-12, atol=1e-14)


def test_sgd_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    a = make_params(rng, np.float32)
    b = [SimpleNamespace(name=p.name, value=p.value.copy(), grad=None, hyper=p.hyper) for p in a]
    opt_a = SGD(a, lr=0.05)
    grads = [[rng.standard_normal(p.value.shape).astype(np.float32) for p in a] for _ in range(4)]
    for g in grads[:2]:
        for p, gi in zip(a, g):
            p.grad = gi
        opt_a.step()
    state = opt_a.state_dict()
    for pb, pa in zip(b, a):
        pb.value[...] = pa.value
    opt_b = SGD(b, lr=1.0)
    opt_b.load_state_dict(state)
    assert opt_b.lr == 0.05
    for g in grads[2:]:
        for pa, pb, gi in zip(a, b, g):
            pa.grad = gi
            pb.grad = gi.copy()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.value, pb.value)
    # the state is a copy, not a view of the live velocity
    assert not any(np.shares_memory(state["velocity"][k], opt_a.velocity[k]) for k in state["velocity"])


def test_sgd_errors():
    rng = np.random.default_rng(2)
    params = make_params(rng)
    opt = SGD(params)
    with pytest.raises(ValueError, match="no gradient"):
        opt.step()
    with pytest.raises(ValueError, match="learning rate"):
        SGD(params, lr=0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(params, momentum=1.5)
    with pytest.raises(ValueError, match="unique"):
        SGD(params + params[:1])
    state = opt.state_dict()
    del state["velocity"]["fc.w"]
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict(state)
    state = opt.state_dict()
    state["velocity"]["fc.w"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(state)


def test_sgd_on_the_emulated_kernel_matches_numpy():
    pytest.importorskip("convnet.kernel_ops.sgd")
    try:
        import convnet._emu  # noqa: F401
    except ImportError:
        pytest.skip("CPU emulation extension not built")
    rng = np.random.default_rng(3)
    a = make_params(rng, np.float32)
    for device in (B.emu(0), B.emu(1)):
        b = [SimpleNamespace(name=p.name, value=device.asarray(p.value), grad=None, hyper=p.hyper) for p in a]
        opt_b = SGD(b, lr=0.03)
        assert all(v.device is device for v in opt_b.velocity.values())
        check_same_steps(a, b, SGD(a, lr=0.03), opt_b, device, rng)


def check_same_steps(a, b, opt_a, opt_b, device, rng):
    for _ in range(2):
        for pa, pb in zip(a, b):
            pa.grad = rng.standard_normal(pa.value.shape).astype(np.float32)
            pb.grad = device.asarray(pa.grad)
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        assert pb.value.device is device
        np.testing.assert_allclose(B.to_host(pb.value), pa.value, rtol=1e-5, atol=1e-6)


def test_optimizer_state_lives_on_the_second_device_of_a_two_column_net(tmp_path):
    """Two columns on emulated devices 0 and 1: every velocity is made on its parameter's
    device (not the current one), the update runs there, and a checkpoint round trip keeps
    it there. On GPUs the same mistake fails the first step on GPU 1."""
    try:
        import convnet._emu  # noqa: F401
    except ImportError:
        pytest.skip("CPU emulation extension not built")
    from test_columns import batch, two_columns
    from convnet.net import Net
    net = Net(two_columns(0.5), devices=B.parse("emu:0,1"), seed=3)
    opt = SGD(net.params(), lr=0.01)
    assert {p.value.device.id for p in net.params()} == {0, 1}
    for p in net.params():
        assert opt.velocity[p.name].device is p.value.device, p.name
    x, labels = batch(np.float32)
    net.loss(net.forward(x, train=True), labels)
    net.backward()
    before = {p.name: B.to_host(p.value).copy() for p in net.params()}
    opt.step()
    changed = [p.name for p in net.params() if not np.array_equal(B.to_host(p.value), before[p.name])]
    assert len(changed) == len(before)
    state = opt.state_dict()
    again = SGD(net.params(), lr=0.01)
    again.load_state_dict(state)
    for p in net.params():
        v = again.velocity[p.name]
        assert v.device is p.value.device and np.array_equal(B.to_host(v), state["velocity"][p.name])


def test_plateau_divides_after_patience_at_most_max_drops():
    s = PlateauSchedule(0.1, patience=2, factor=10, max_drops=2)
    lrs = [s.end_epoch(e) for e in [0.5, 0.4, 0.4, 0.45, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]]
    # no improvement after epoch 2 -> two bad epochs (3, 4) -> drop; best 0.3 at
    # epoch 5; bad 6, 7 -> drop; then max_drops reached
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001])
    assert s.drops == 2


def test_schedule_state_round_trip_and_step():
    s = StepSchedule(0.1, epochs=[2, 4])
    lrs = [s.end_epoch(0.5) for _ in range(5)]
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 0.001, 0.001])
    p = PlateauSchedule(0.05, patience=1)
    p.end_epoch(0.3)
    q = PlateauSchedule(1.0, patience=1)
    q.load_state_dict(p.state_dict())
    assert (q.lr, q.best, q.epochs_done) == (0.05, 0.3, 1)
    assert q.end_epoch(0.3) == pytest.approx(0.005) and p.end_epoch(0.3) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="plateau"):
        StepSchedule(0.1).load_state_dict(p.state_dict())
    assert Schedule(0.1).end_epoch(1.0) == 0.1


def test_make_schedule():
    assert isinstance(make_schedule("plateau", 0.01, patience=3), PlateauSchedule)
    assert make_schedule("step", 0.01, epochs=[1]).end_epoch(0) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        make_schedule("cosine", 0.01)
