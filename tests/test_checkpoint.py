"""Checkpoints: round trip, atomic writes, refusal of NaN states, clear errors."""
import os
import pickle

import numpy as np
import pytest

from convnet import checkpoint
from convnet.checkpoint import CheckpointError, NonFiniteStateError


class FakeNet:
    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((4, 3)).astype(np.float32)
        self.b = np.zeros(4, np.float32)

    def state_dict(self):
        return {"fc.w": self.w.copy(), "fc.b": self.b.copy()}


class FakeOpt:
    def state_dict(self):
        return {"lr": 0.01, "velocity": {"fc.w": np.ones((4, 3), np.float32)}}


def test_round_trip(tmp_path):
    net = FakeNet()
    rng = np.random.default_rng(5)
    path = tmp_path / "a" / "x.ckpt"                      # the folder is created
    checkpoint.save(path, net, FakeOpt(), epoch=3, rng=rng.bit_generator.state,
                    metrics=[{"epoch": 1, "val_top1": np.float64(0.25)}],
                    config={"LAYERS": [{"name": "fc", "params": {"out": (4,)}}]},
                    global_step=17)
    state = checkpoint.load(path)
    assert state["epoch"] == 3 and state["global_step"] == 17
    np.testing.assert_array_equal(state["net"]["fc.w"], net.w)
    assert state["optimizer"]["lr"] == 0.01
    assert state["metrics"][0]["val_top1"] == 0.25
    r2 = np.random.default_rng()
    r2.bit_generator.state = state["rng"]
    assert r2.random() == rng.random()
    assert checkpoint.load(tmp_path / "a" / "x.ckpt")["config"]["LAYERS"][0]["params"]["out"] == (4,)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.ckpt"]   # no temporary left


def test_save_run_keeps_last_and_best(tmp_path):
    net = FakeNet()
    s1 = checkpoint.make_state(net, FakeOpt(), 1)
    checkpoint.save_run(tmp_path, s1, best=True)
    net.w += 1
    s2 = checkpoint.make_state(net, FakeOpt(), 2)
    checkpoint.save_run(tmp_path, s2, best=False)
    assert checkpoint.load(tmp_path / "last.ckpt")["epoch"] == 2
    assert checkpoint.load(tmp_path / "best.ckpt")["epoch"] == 1
    assert checkpoint.load(tmp_path)["epoch"] == 2       # a folder means its last.ckpt


def test_non_finite_state_is_never_written(tmp_path):
    net = FakeNet()
    checkpoint.save_run(tmp_path, checkpoint.make_state(net, FakeOpt(), 1), best=True)
    net.w[1, 2] = np.nan
    with pytest.raises(NonFiniteStateError, match=r"net\.fc\.w"):
        checkpoint.save_run(tmp_path, checkpoint.make_state(net, FakeOpt(), 2), best=True)
    with pytest.raises(NonFiniteStateError):
        checkpoint.save(tmp_path / "last.ckpt", net, FakeOpt(), 2)
    for name in ("last.ckpt", "best.ckpt"):
        state = checkpoint.load(tmp_path / name)
        assert state["epoch"] == 1 and np.all(np.isfinite(state["net"]["fc.w"]))


def test_crash_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.save(path, FakeNet(), FakeOpt(), epoch=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk on fire")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk on fire"):
        checkpoint.save(path, FakeNet(seed=1), FakeOpt(), epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_crash_mid_pickle_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.save(path, FakeNet(), FakeOpt(), epoch=1)

    real_write = os.fdopen

    class Interrupting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])         # half the bytes, then the signal
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Interrupting(real_write(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, FakeNet(seed=1), FakeOpt(), epoch=2)
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_load_errors_are_one_line(tmp_path):
    cases = []
    with pytest.raises(CheckpointError, match="not found") as e:
        checkpoint.load(tmp_path / "missing.ckpt")
    cases.append(e)
    with pytest.raises(CheckpointError, match="no checkpoint in folder") as e:
        checkpoint.load(tmp_path)
    cases.append(e)
    good = tmp_path / "good.ckpt"
    checkpoint.save(good, FakeNet(), FakeOpt(), epoch=1)
    truncated = tmp_path / "trunc.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable") as e:
        checkpoint.load(truncated)
    cases.append(e)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00hello")
    with pytest.raises(CheckpointError, match="not a readable") as e:
        checkpoint.load(garbage)
    cases.append(e)
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a convnet checkpoint") as e:
        checkpoint.load(foreign)
    cases.append(e)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps(os.getcwd))            # a callable: refused, not run
    with pytest.raises(CheckpointError, match="not allowed") as e:
        checkpoint.load(evil)
    cases.append(e)
    for e in cases:
        assert "\n" not in str(e.value)
    assert issubclass(CheckpointError, ValueError)
