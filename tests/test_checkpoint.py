"""Checkpoints: round trip, atomic writes, refusal of NaN states, integrity, clear errors,
conversion of the old format, the run folder's lock and best.ckpt repair."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from convnet import checkpoint
from convnet.checkpoint import CheckpointError, NonFiniteStateError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert checkpoint.load(tmp_path / "a" / "x.ckpt")["config"]["LAYERS"][0]["params"]["out"] == [4]   # JSON
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

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", **kw: Interrupting(real_write(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, FakeNet(seed=1), FakeOpt(), epoch=2)
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_load_errors_are_one_line(tmp_path):
    from safetensors.numpy import save as st_save
    cases = []
    with pytest.raises(CheckpointError, match="checkpoint not found") as e:
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
    cut_data = tmp_path / "cut.ckpt"
    cut_data.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt") as e:
        checkpoint.load(cut_data)
    cases.append(e)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00hello")
    with pytest.raises(CheckpointError, match="not a readable") as e:
        checkpoint.load(garbage)
    cases.append(e)
    foreign = tmp_path / "foreign.safetensors"               # a safetensors file, not ours
    foreign.write_bytes(st_save({"w": np.ones(3, np.float32)}))
    with pytest.raises(CheckpointError, match="not a convnet checkpoint") as e:
        checkpoint.load(foreign)
    cases.append(e)
    fifo = tmp_path / "fifo.ckpt"                            # would block a plain open()
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file") as e:
        checkpoint.load(fifo)
    cases.append(e)
    for e in cases:
        assert "\n" not in str(e.value)
    assert issubclass(CheckpointError, ValueError)


def test_no_code_runs_when_loading(tmp_path):
    """A pickle is never unpickled by load (it names the converter); the converter refuses
    any class outside the allow-list without calling it."""
    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))
    evil.write_bytes(pickle.dumps({"format": "convnet-checkpoint", "version": 1, "x": Boom()}))
    with pytest.raises(CheckpointError, match="convert it once with python -m convnet.checkpoint convert"):
        checkpoint.load(evil)
    with pytest.raises(CheckpointError, match="not allowed"):
        checkpoint.convert(str(evil))
    assert not marker.exists()


def test_any_flipped_byte_is_refused(tmp_path):
    """A checksum over the whole file: a changed byte anywhere (header, JSON state, tensor
    data) is a one-line CheckpointError, never a silently different state."""
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, FakeNet(), FakeOpt(), epoch=3, metrics=[{"epoch": 1, "val_top1": 0.5}])
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(0)
    positions = sorted(set(range(0, 16)) | set(rng.integers(8, 8 + n, 60).tolist())
                       | set(rng.integers(8 + n, len(data), 60).tolist()) | {len(data) - 1})
    bad = tmp_path / "bad.ckpt"
    for pos in positions:
        for flip in (0x01, 0x40):
            changed = bytearray(data)
            changed[pos] ^= flip
            bad.write_bytes(bytes(changed))
            with pytest.raises(CheckpointError) as e:
                checkpoint.load(bad)
            assert "\n" not in str(e.value)
    sixty_four = bytearray(data)                              # the case: 64 bytes of array data
    sixty_four[-64:] = bytes(b ^ 0xFF for b in sixty_four[-64:])
    bad.write_bytes(bytes(sixty_four))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(bad)


def test_fields_of_the_wrong_type_are_refused(tmp_path):
    """A well-formed file (right checksum) whose fields have the wrong types: one line naming
    the field, before anything is built from it."""
    base = checkpoint.make_state(FakeNet(), FakeOpt(), 1)
    for change, field in [({"epoch": "three"}, "epoch"), ({"epoch": -1}, "epoch"),
                          ({"global_step": 2.5}, "global_step"), ({"net": {"fc.w": "x"}}, "net"),
                          ({"metrics": {"a": 1}}, "metrics"), ({"config": {"LAYERS": 3}}, "config"),
                          ({"optimizer": {"lr": "fast", "velocity": {}}}, "optimizer.lr"),
                          ({"best_epoch": True}, "best_epoch")]:
        path = tmp_path / "t.ckpt"
        checkpoint.write_state(path, {**base, **change})
        with pytest.raises(CheckpointError, match=field) as e:
            checkpoint.load(path)
        assert "\n" not in str(e.value)


def _version1_file(path, state):
    """A checkpoint as the version-1 code wrote it (a pickled dict)."""
    path.write_bytes(pickle.dumps(dict(state, format="convnet-checkpoint", version=1), protocol=4))


def test_convert_a_version1_checkpoint_once(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    state = checkpoint.make_state(FakeNet(), FakeOpt(), 2, metrics=[{"epoch": 1, "val_top1": 0.5}],
                                  config={"LAYERS": [{"name": "d"}], "HYPER": {}}, global_step=9)
    _version1_file(run / "last.ckpt", state)
    _version1_file(run / "best.ckpt", dict(state, epoch=1))
    with pytest.raises(CheckpointError, match="version 1") as e:
        checkpoint.load(run / "last.ckpt")
    assert f"convnet.checkpoint convert {run / 'last.ckpt'}" in str(e.value)
    assert checkpoint.main(["convert", str(run)]) == 0
    assert capsys.readouterr().out.count("converted to version 2") == 2
    last, best = checkpoint.load(run / "last.ckpt"), checkpoint.load(run / "best.ckpt")
    assert (last["epoch"], last["global_step"], best["epoch"]) == (2, 9, 1)
    np.testing.assert_array_equal(last["net"]["fc.w"], state["net"]["fc.w"])
    np.testing.assert_array_equal(last["optimizer"]["velocity"]["fc.w"], np.ones((4, 3), np.float32))
    assert sorted(p.name for p in run.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert checkpoint.main(["verify", str(run / "last.ckpt")]) == 0
    assert "checksum verified" in capsys.readouterr().out
    assert checkpoint.main(["verify", str(run / "nothing.ckpt")]) == 2
    assert capsys.readouterr().err.strip().endswith("nothing.ckpt: checkpoint not found")


def test_a_header_length_whose_low_byte_is_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A version-1 file starts with byte 0x80; so does a safetensors file whose header is
    0x..80 bytes long (an experiment's last.ckpt of 0x2180 was refused as "version 1")."""
    for pad in range(256):
        state = checkpoint.make_state(FakeNet(), FakeOpt(), 1, note="x" * pad)
        data = checkpoint.encode(state)
        if data[0] == 0x80:
            break
    assert data[0] == 0x80 and data[8:9] == b"{"
    path = tmp_path / "last.ckpt"
    checkpoint.write_state(path, state)
    assert checkpoint.load(path)["note"] == "x" * pad
    assert checkpoint.convert(str(path)).endswith("already version 2")


def test_write_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / "last.ckpt")
    checkpoint.save_run(run, checkpoint.make_state(FakeNet(), FakeOpt(), 1), best=False)
    assert victim.read_text() == "precious"
    assert not os.path.islink(run / "last.ckpt") and checkpoint.load(run)["epoch"] == 1


def test_save_run_writes_last_first_and_repair_restores_best(tmp_path, monkeypatch):
    """kill -9 between last.ckpt and best.ckpt of a new best epoch: last.ckpt names the
    best epoch; repair_best copies it over the older best.ckpt."""
    from convnet import fsio
    net = FakeNet()
    checkpoint.save_run(tmp_path, checkpoint.make_state(net, FakeOpt(), 1, best_epoch=1), best=True)
    real = fsio.write_atomic
    written = []

    def die_before_best(path, *a, **kw):
        if os.path.basename(path) == "best.ckpt":
            raise SystemExit("killed")                   # stands for kill -9 after last.ckpt
        written.append(os.path.basename(path))
        return real(path, *a, **kw)
    monkeypatch.setattr(fsio, "write_atomic", die_before_best)
    with pytest.raises(SystemExit):
        checkpoint.save_run(tmp_path, checkpoint.make_state(FakeNet(seed=1), FakeOpt(), 2, best_epoch=2), best=True)
    monkeypatch.undo()
    assert written == ["last.ckpt"]
    assert checkpoint.load(tmp_path / "best.ckpt")["epoch"] == 1
    note = checkpoint.repair_best(str(tmp_path))
    assert note and "restored" in note
    assert checkpoint.load(tmp_path / "best.ckpt")["epoch"] == 2
    assert checkpoint.repair_best(str(tmp_path)) is None            # nothing more to do
    (tmp_path / "best.ckpt").unlink()                               # killed before the first best.ckpt
    assert checkpoint.repair_best(str(tmp_path)) and checkpoint.load(tmp_path / "best.ckpt")["epoch"] == 2


def test_run_lock_busy_stale_and_symlink(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from convnet import checkpoint; l = checkpoint.RunLock(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(60)"), str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(checkpoint.RunFolderBusy, match=f"pid {holder.pid} on ") as e:
            checkpoint.RunLock(str(tmp_path))
        assert "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    lock = checkpoint.RunLock(str(tmp_path))                        # the holder died: stale, taken over
    assert lock.note and f"pid {holder.pid}" in lock.note and "stale" in lock.note
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    again = checkpoint.RunLock(str(tmp_path))                       # released cleanly: no note
    assert again.note is None
    again.release()
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(tmp_path / "elsewhere", other / "run.lock")
    with pytest.raises(CheckpointError, match="symbolic link"):
        checkpoint.RunLock(str(other))
    assert not (tmp_path / "elsewhere").exists()
