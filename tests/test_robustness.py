"""Nothing lost, nothing hangs, one clear line: the commands against careless, hostile and
unlucky use (run folders shared or reused, kills at bad moments, planted symlinks, disk
full, read-only folders, broken configs, checkpoints and datasets, Ctrl-C at any moment).

Every error is checked to be one line on stderr with the right exit code: 2 bad input,
1 a failing machine, 130 Ctrl-C. Tiny net, tiny data: each test runs in about a second.
"""
import errno
import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet import checkpoint, fsio
from convnet import evaluate as evaluate_mod
from convnet import prepare as prepare_mod
from convnet import train as train_mod
from test_train import TINY_CONFIG, make_dataset, write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("robust")
    data = make_dataset(str(base / "bars"), n_train=60, n_test=20)
    config = base / "tiny.py"
    config.write_text(TINY_CONFIG)
    return {"data": data, "config": str(config), "base": base}


def train(setup, ckdir, *extra, on_step=None):
    """(exit code, stdout lines) of convnet.train in this process."""
    lines = []
    argv = ["--config", setup["config"], "--data", setup["data"], "--device", "cpu",
            "--checkpoint-dir", str(ckdir), "--log-every", "1", "--no-progress", *extra]
    return train_mod.main(argv, on_step=on_step, out=lines.append), lines


def one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def command(module, *args, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def log_records(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def finished(setup, tmp_path_factory):
    """A finished 2-epoch run folder (copied by tests that change it)."""
    ckdir = tmp_path_factory.mktemp("finished") / "run"
    assert train(setup, ckdir, "--epochs", "2")[0] == 0
    return ckdir


# --------------------------------------------------------------------------
# Run folders

def test_fresh_run_refuses_a_folder_holding_a_run(setup, finished, capsys):
    before = {n: (finished / n).read_bytes() for n in ("last.ckpt", "best.ckpt", "log.jsonl")}
    code, _ = train(setup, finished, "--epochs", "1")
    line = one_line(capsys)
    assert code == 2 and "--resume" in line and "--overwrite" in line and str(finished) in line
    assert {n: (finished / n).read_bytes() for n in before} == before


def test_overwrite_starts_afresh(setup, tmp_path, capsys):
    ckdir = tmp_path / "run"
    assert train(setup, ckdir, "--epochs", "2")[0] == 0
    code, lines = train(setup, ckdir, "--epochs", "1", "--overwrite")
    assert code == 0 and any("--overwrite: deleted" in x for x in lines)
    assert checkpoint.load(ckdir / "last.ckpt")["epoch"] == 1
    assert [r["epoch"] for r in log_records(ckdir / "log.jsonl") if r["type"] == "epoch"] == [1]


def test_resume_into_a_folder_of_another_run_refuses(setup, finished, tmp_path, capsys):
    other = tmp_path / "other"
    assert train(setup, other, "--epochs", "1")[0] == 0
    capsys.readouterr()
    code, _ = train(setup, other, "--resume", str(finished / "last.ckpt"), "--epochs", "3")
    assert code == 2 and "--overwrite" in one_line(capsys)


def test_second_run_in_a_busy_folder_refuses(setup, tmp_path, capsys):
    ckdir = tmp_path / "run"
    ckdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from convnet import checkpoint; l = checkpoint.RunLock(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(60)"), str(ckdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _ = train(setup, ckdir, "--epochs", "1")
        line = one_line(capsys)
        assert code == 2 and f"pid {holder.pid}" in line and "in use by another run" in line
        assert not (ckdir / "log.jsonl").exists() and not (ckdir / "last.ckpt").exists()
    finally:
        holder.kill()
        holder.wait()
    code, lines = train(setup, ckdir, "--epochs", "1")                   # its owner died: taken over
    assert code == 0 and any("took over a stale lock" in x and str(holder.pid) in x for x in lines)


def test_kill_between_last_and_best_is_repaired_on_resume(setup, tmp_path, monkeypatch):
    """Killed after last.ckpt of a new best epoch, before best.ckpt: the resumed run restores
    best.ckpt from last.ckpt, even when there is nothing left to train."""
    ckdir = tmp_path / "run"
    real = fsio.write_atomic

    def killed_at_best(path, *a, **kw):
        if os.path.basename(path) == "best.ckpt":
            raise SystemExit(137)                       # the process ends here, as with kill -9
        return real(path, *a, **kw)
    monkeypatch.setattr(fsio, "write_atomic", killed_at_best)
    with pytest.raises(SystemExit):
        train(setup, ckdir, "--epochs", "1")
    monkeypatch.undo()
    assert (ckdir / "last.ckpt").exists() and not (ckdir / "best.ckpt").exists()
    code, lines = train(setup, ckdir, "--resume", str(ckdir), "--epochs", "1")
    assert code == 0 and any("restored from last.ckpt" in x for x in lines)
    best = checkpoint.load(ckdir / "best.ckpt")
    assert best["epoch"] == 1 and best["best_epoch"] == 1


def test_log_is_rewritten_to_match_the_checkpoint(setup, finished, tmp_path):
    """After a kill the log may lack epoch lines, hold a torn line, or hold steps past the
    checkpoint: the resumed run's log holds every step and every epoch exactly once."""
    ckdir = tmp_path / "run"
    ckdir.mkdir()
    for n in ("last.ckpt", "best.ckpt"):
        (ckdir / n).write_bytes((finished / n).read_bytes())
    records = log_records(finished / "log.jsonl")
    damaged = [r for r in records if r["type"] == "step"]                   # both epoch lines lost
    damaged += [{"type": "step", "epoch": 3, "step": 7, "batch": 1, "loss": 9.0}]   # past the checkpoint
    (ckdir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in damaged) + '{"type": "st')
    assert train(setup, ckdir, "--resume", str(ckdir), "--epochs", "3")[0] == 0
    log = log_records(ckdir / "log.jsonl")
    assert [r["epoch"] for r in log if r["type"] == "epoch"] == [1, 2, 3]
    assert [r["step"] for r in log if r["type"] == "step"] == list(range(1, 10))
    assert all(r["loss"] != 9.0 for r in log if r["type"] == "step")
    epoch_at = [i for i, r in enumerate(log) if r["type"] == "epoch"]
    assert [log[i - 1]["step"] for i in epoch_at] == [3, 6, 9]            # each after its epoch's steps


def test_no_file_is_written_through_a_planted_symlink(setup, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ckdir = tmp_path / "run"
    ckdir.mkdir()
    os.symlink(victim, ckdir / "log.jsonl")
    assert train(setup, ckdir, "--epochs", "1")[0] == 0
    assert victim.read_text() == "precious\n" and not os.path.islink(ckdir / "log.jsonl")
    assert [r["epoch"] for r in log_records(ckdir / "log.jsonl") if r["type"] == "epoch"] == [1]
    # planted after the run started: the append refuses instead of following it
    os.unlink(ckdir / "log.jsonl")
    os.symlink(victim, ckdir / "log.jsonl")
    with pytest.raises(OSError, match="symbolic link"):
        fsio.open_append(str(ckdir / "log.jsonl"))
    assert victim.read_text() == "precious\n"


# --------------------------------------------------------------------------
# The machine fails: disk full, read-only, size limit

def _fsync_fails(err, only=""):
    """An os.fsync that fails with err for files whose path contains `only`."""
    real = os.fsync

    def fsync(fd):
        if only in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(err, os.strerror(err))
        return real(fd)
    return fsync


def test_disk_full_on_the_first_save_is_one_line_exit_1(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", _fsync_fails(errno.ENOSPC, only=".last.ckpt."))
    code, _ = train(setup, tmp_path / "run", "--epochs", "1")
    line = one_line(capsys)
    assert code == 1 and "last.ckpt" in line and "No space left on device" in line
    assert sorted(os.listdir(tmp_path / "run")) == ["log.jsonl", "run.lock"]     # no temporary left


def test_disk_full_on_resume_and_on_ctrl_c_keeps_the_checkpoint(setup, finished, tmp_path, monkeypatch,
                                                                 capsys):
    ckdir = tmp_path / "run"
    ckdir.mkdir()
    (ckdir / "last.ckpt").write_bytes((finished / "last.ckpt").read_bytes())
    before = (ckdir / "last.ckpt").read_bytes()
    monkeypatch.setattr(os, "fsync", _fsync_fails(errno.ENOSPC))
    code, _ = train(setup, ckdir, "--resume", str(ckdir), "--epochs", "3")
    assert code == 1 and "No space left" in one_line(capsys)                 # the log rewrite failed
    monkeypatch.undo()
    assert (ckdir / "last.ckpt").read_bytes() == before

    def ctrl_c_then_disk_full(trainer):
        trainer.on_step = None
        os.fsync = _fsync_fails(errno.ENOSPC, only=".last.ckpt.")
        os.kill(os.getpid(), signal.SIGINT)
    real_fsync = os.fsync
    try:
        code, _ = train(setup, ckdir, "--resume", str(ckdir), "--epochs", "3", on_step=ctrl_c_then_disk_full)
    finally:
        os.fsync = real_fsync
    err = capsys.readouterr().err
    assert code == 1 and "No space left" in err and "Traceback" not in err
    assert (ckdir / "last.ckpt").read_bytes() == before
    assert not [n for n in os.listdir(ckdir) if n.endswith(".tmp")]


def test_file_size_limit_in_a_real_process(setup, tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: EFBIG, as a full disk would refuse it)."""
    ckdir = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    r = command("convnet.train", "--config", setup["config"], "--data", setup["data"], "--device", "cpu",
                "--checkpoint-dir", ckdir, "--epochs", "1", "--no-progress", "--log-every", "1000",
                preexec_fn=limit)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "last.ckpt" in lines[0] and "too large" in lines[0], r.stderr
    assert not (ckdir / "last.ckpt").exists() and not [n for n in os.listdir(ckdir) if n.endswith(".tmp")]


def test_read_only_folder_is_exit_1(setup, tmp_path, monkeypatch, capsys):
    real = os.makedirs

    def read_only(path, *a, **kw):
        if str(tmp_path) in os.fspath(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "makedirs", read_only)
    code, _ = train(setup, tmp_path / "ro" / "run", "--epochs", "1")
    line = one_line(capsys)
    assert code == 1 and "Read-only file system" in line and "ro" in line


@pytest.mark.parametrize("kind", ["file", "under-file", "log-is-folder"])
def test_paths_that_are_the_wrong_kind_are_exit_2(setup, tmp_path, capsys, kind):
    (tmp_path / "afile").write_text("x")
    extra = []
    ckdir = tmp_path / "run"
    if kind == "file":
        ckdir = tmp_path / "afile"
    elif kind == "under-file":
        ckdir = tmp_path / "afile" / "run"
    else:
        (tmp_path / "logdir").mkdir()
        extra = ["--log", str(tmp_path / "logdir")]
    code, _ = train(setup, ckdir, "--epochs", "1", *extra)
    line = one_line(capsys)
    assert code == 2 and ("afile" in line or "logdir" in line), line
    assert (tmp_path / "afile").read_text() == "x"


# --------------------------------------------------------------------------
# Ctrl-C at any moment

def test_ctrl_c_during_start_up_is_130_and_one_line(setup, tmp_path):
    interrupted = 0
    for delay in (0.1, 0.2, 0.4, 1.0):                  # during the imports; while loading or training
        cmd = [sys.executable, "-m", "convnet.train", "--config", setup["config"], "--data", setup["data"],
               "--device", "cpu", "--checkpoint-dir", str(tmp_path / f"run{delay}"), "--epochs", "1",
               "--no-progress"]                      # a folder per run: a finished run's would be refused
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=60)[1]
        if p.returncode == 0:
            continue                                    # it finished first: nothing to check
        if p.returncode == -signal.SIGINT and not err:
            continue                                    # before Python's own handler (a loaded machine)
        if "KeyboardInterrupt" in err and "convnet" not in err.replace("-m convnet.train", ""):
            continue                                    # in the interpreter's start-up, before our first line
        lines = err.strip().splitlines()
        assert p.returncode == 130 and "Traceback" not in err, (delay, err)
        if len(lines) == 2 and "finishing this step" in lines[0] and "saved" in lines[1]:
            continue                                    # already training: the mid-run Ctrl-C path
        assert len(lines) == 1, (delay, err)
        interrupted += 1
    assert interrupted, "no run was interrupted while starting up"


def test_second_ctrl_c_during_the_interrupt_save(setup, finished, tmp_path, monkeypatch, capsys):
    ckdir = tmp_path / "run"
    ckdir.mkdir()
    (ckdir / "last.ckpt").write_bytes((finished / "last.ckpt").read_bytes())
    before = (ckdir / "last.ckpt").read_bytes()
    real = fsio.write_atomic

    def second_ctrl_c(path, *a, **kw):
        if os.path.basename(path) == "last.ckpt":
            os.kill(os.getpid(), signal.SIGINT)         # arrives while the save is under way
            time.sleep(0.01)
        return real(path, *a, **kw)

    def first_ctrl_c(trainer):
        trainer.on_step = None
        monkeypatch.setattr(fsio, "write_atomic", second_ctrl_c)
        os.kill(os.getpid(), signal.SIGINT)
    code, _ = train(setup, ckdir, "--resume", str(ckdir), "--epochs", "3", on_step=first_ctrl_c)
    err = capsys.readouterr().err
    assert code == 130 and "aborted during the save" in err and "Traceback" not in err
    assert (ckdir / "last.ckpt").read_bytes() == before
    assert not [n for n in os.listdir(ckdir) if n.endswith(".tmp")]


# --------------------------------------------------------------------------
# Configs

@pytest.mark.parametrize("text, message", [
    ("LAYERS = [\n  {'name': 'd',\n", "syntax error"),
    ("raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    ("import no_such_module_here\n", "import failed"),
    ("LAYERS = []\nHYPER = {}\n", "non-empty list"),
    (TINY_CONFIG + "HYPER['lr'] = 'fast'\n", "HYPER['lr'] must be a number"),
    (TINY_CONFIG + "HYPER['batch_size'] = 2.5\n", "HYPER['batch_size'] must be an integer"),
    (TINY_CONFIG + "HYPER['momentum'] = None\n", "HYPER['momentum']"),
    (TINY_CONFIG + "LAYERS[1]['filters'] = '5'\n", "filters must be an integer"),
    (TINY_CONFIG + "LAYERS[3]['outputs'] = 2 ** 40\n", "far too large"),
])
def test_bad_config_files_are_one_line(setup, tmp_path, capsys, text, message):
    path = tmp_path / "mine.py"
    path.write_text(text)
    code, _ = train({**setup, "config": str(path)}, tmp_path / "run", "--epochs", "1")
    line = one_line(capsys)
    assert code == 2 and message in line and "mine.py" in line, line


# --------------------------------------------------------------------------
# Checkpoints that do not fit

def _doctored(finished, tmp_path, change):
    state = checkpoint.load(finished / "last.ckpt")
    change(state)
    ckdir = tmp_path / "doctored"
    ckdir.mkdir(exist_ok=True)
    checkpoint.write_state(ckdir / "last.ckpt", state)
    return ckdir / "last.ckpt"


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(epoch="three"), "'epoch' must be an integer"),
    (lambda s: s["run"].update(batch_size="20"), "'batch_size'"),
    (lambda s: s["config"]["LAYERS"][3].update(outputs=2 ** 40), "far too large"),
    (lambda s: s["config"].update(LAYERS=[]), "non-empty list"),
])
def test_checkpoints_with_bad_fields_are_one_line(setup, finished, tmp_path, capsys, change, message):
    path = _doctored(finished, tmp_path, change)
    t0 = time.perf_counter()
    code, _ = train(setup, tmp_path / "run", "--resume", str(path), "--epochs", "3")
    assert code == 2 and message in one_line(capsys)
    if "batch_size" not in message:
        assert evaluate_mod.main([str(path), "--data", setup["data"], "--device", "cpu"], out=lambda s: None) == 2
        assert message in one_line(capsys)
    assert time.perf_counter() - t0 < 20                 # refused before any allocation


def test_a_corrupt_checkpoint_is_refused_by_every_command(setup, finished, tmp_path, capsys):
    path = tmp_path / "flipped.ckpt"
    data = bytearray((finished / "last.ckpt").read_bytes())
    data[-200:-136] = bytes(b ^ 0x5A for b in data[-200:-136])           # 64 bytes of array data
    path.write_bytes(bytes(data))
    assert evaluate_mod.main([str(path), "--data", setup["data"], "--device", "cpu"], out=lambda s: None) == 2
    assert "checksum mismatch" in one_line(capsys)
    code, _ = train(setup, tmp_path / "run", "--resume", str(path), "--epochs", "3")
    assert code == 2 and "checksum mismatch" in one_line(capsys)


def test_evaluate_refuses_data_with_more_classes_than_the_net(setup, finished, tmp_path, capsys):
    data = tmp_path / "five"
    data.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("train", "t10k"):
        write_idx(str(data / f"{stem}-images-idx3-ubyte.gz"), rng.integers(0, 255, (10, 12, 12)).astype(np.uint8))
        write_idx(str(data / f"{stem}-labels-idx1-ubyte.gz"), (np.arange(10) % 5).astype(np.uint8))
    code = evaluate_mod.main([str(finished / "best.ckpt"), "--data", str(data), "--device", "cpu"],
                             out=lambda s: None)
    line = one_line(capsys)
    assert code == 2 and "3 classes" in line and "has 5" in line


# --------------------------------------------------------------------------
# Readers

def _idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_idx_with_no_images_or_absurd_labels_is_refused(tmp_path):
    from convnet.data import DataError, load_dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    for stem in ("train", "t10k"):
        _idx(empty / f"{stem}-images-idx3-ubyte.gz", np.zeros((0, 8, 8), np.uint8))
        _idx(empty / f"{stem}-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(str(empty), "train")
    huge = tmp_path / "huge"
    huge.mkdir()
    for stem in ("train", "t10k"):
        _idx(huge / f"{stem}-images-idx3-ubyte.gz", np.zeros((2, 8, 8), np.uint8))
        _idx(huge / f"{stem}-labels-idx1-ubyte.gz", np.array([0, 2 ** 31 - 1], ">i4"), code=0x0C)
    with pytest.raises(DataError, match="label 2147483647 out of range"):
        load_dataset(str(huge), "train")
    with pytest.raises(DataError, match="label 2147483647 out of range"):
        load_dataset(str(huge), "test")


def _tree_with_fifo(root):
    from PIL import Image
    for split in ("train", "test"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    os.mkfifo(root / "train" / "a" / "x.png")


def test_a_fifo_named_like_an_image_does_not_hang_the_readers(setup, tmp_path):
    root = tmp_path / "tree"
    _tree_with_fifo(root)
    r = command("convnet.train", "--config", setup["config"], "--data", root, "--device", "cpu",
                "--checkpoint-dir", tmp_path / "run", "--epochs", "1", "--no-progress", timeout=60,
                env=dict(os.environ, CONVNET_CACHE=str(tmp_path / "cache")))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "x.png" in lines[0] and "FIFO" in lines[0], r.stderr


def test_a_fifo_in_a_prepared_folder_does_not_hang(tmp_path):
    from convnet.data import DataError, load_dataset
    src = tmp_path / "src"
    _tree_with_fifo(src)
    r = command("convnet.prepare", src / "train", tmp_path / "out", "--size", "8", "--workers",
                "1", "--quiet", timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.load(open(tmp_path / "out" / "report.json"))["skipped"]
    assert [os.path.basename(x["path"]) for x in report] == ["x.png"] and "FIFO" in report[0]["reason"]
    os.unlink(tmp_path / "out" / "mean.npy")
    os.mkfifo(tmp_path / "out" / "mean.npy")
    with pytest.raises(DataError, match="FIFO"):
        load_dataset(str(tmp_path / "out"), "train")


# --------------------------------------------------------------------------
# prepare

def _small_tree(root, n=6):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_prepare_removes_temporaries_on_exit_and_of_a_killed_run(tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _small_tree(src)
    real = fsio.write_atomic
    calls = []

    def interrupted(path, *a, **kw):
        calls.append(path)
        if len(calls) == 3:                             # mid-way through the shards
            def write(f):
                f.write(b"half")
                raise KeyboardInterrupt
            return real(path, write=write)
        return real(path, *a, **kw)
    monkeypatch.setattr(fsio, "write_atomic", interrupted)
    code = prepare_mod.main([str(src), str(out), "--size", "8", "--shard-size", "2", "--workers", "1", "--quiet"])
    monkeypatch.undo()
    assert code == 130 and "run the same command again" in capsys.readouterr().err
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    (out / ".train-00004.npy.k1ll3d.tmp").write_bytes(b"left by kill -9")
    assert prepare_mod.main([str(src), str(out), "--size", "8", "--shard-size", "2", "--workers", "1",
                             "--quiet"]) == 0
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_prepare_sigterm_cleans_up_and_exits_130(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _small_tree(src, n=60)
    p = subprocess.Popen([sys.executable, "-m", "convnet.prepare", str(src), str(out), "--size", "8",
                          "--shard-size", "2", "--workers", "1", "--quiet"], cwd=ROOT, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 60
    while not list(out.glob("*.done")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    if p.returncode == 0:
        pytest.skip("prepare finished before the signal")
    assert p.returncode == 130 and "Traceback" not in err, err
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_prepare_disk_full_and_read_only_are_exit_1(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    _small_tree(src)
    monkeypatch.setattr(os, "fsync", _fsync_fails(errno.ENOSPC))
    assert prepare_mod.main([str(src), str(tmp_path / "out"), "--size", "8", "--workers", "1", "--quiet"]) == 1
    line = one_line(capsys)
    assert "No space left on device" in line and str(tmp_path / "out") in line
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")]
    monkeypatch.undo()
    real = os.makedirs

    def read_only(path, *a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    monkeypatch.setattr(os, "makedirs", read_only)
    assert prepare_mod.main([str(src), str(tmp_path / "ro"), "--size", "8", "--workers", "1", "--quiet"]) == 1
    assert "Read-only file system" in one_line(capsys)
    monkeypatch.setattr(os, "makedirs", real)


def test_prepare_redoes_a_shard_whose_stats_hold_objects(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _small_tree(src)
    args = [str(src), str(out), "--size", "8", "--shard-size", "4", "--workers", "1", "--quiet"]
    assert prepare_mod.main(args) == 0
    meta_before = json.load(open(out / "meta.json"))
    os.unlink(out / "meta.json")
    with open(out / "train-00000-stats.npz", "wb") as f:
        np.savez(f, sum=np.array([object()], dtype=object), rgb_sum=np.zeros(3), rgb_ss=np.zeros((3, 3)),
                 pixels=np.int64(1))
    assert prepare_mod.main(args) == 0, capsys.readouterr().err
    assert json.load(open(out / "meta.json"))["pca"] == meta_before["pca"]


def test_report_txt_escapes_tabs_newlines_and_bytes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _small_tree(src, n=2)
    names = ["tab\there.png", "new\nline.png", "back\\slash.png", os.fsdecode(b"bad\xffbyte.png")]
    for n in names:
        (src / "a" / n).write_bytes(b"not an image")
    assert prepare_mod.main([str(src), str(out), "--size", "8", "--workers", "1", "--quiet"]) == 0
    lines = (out / "report.txt").read_text().splitlines()
    assert len(lines) == len(names)
    assert all(line.count("\t") == 1 for line in lines)
    paths = sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in lines)
    assert paths == sorted(["tab\\there.png", "new\\nline.png", "back\\\\slash.png", "bad\\xffbyte.png"])


def test_resume_refuses_data_whose_classes_changed(setup, tmp_path, capsys):
    data = tmp_path / "bars"
    make_dataset(str(data), n_train=60, n_test=20)
    ckdir = tmp_path / "run"
    assert train({**setup, "data": str(data)}, ckdir, "--epochs", "1")[0] == 0
    rng = np.random.default_rng(1)
    for stem, n in (("train", 60), ("t10k", 20)):                     # now 5 classes at the same path
        write_idx(str(data / f"{stem}-labels-idx1-ubyte.gz"), rng.integers(0, 5, n).astype(np.uint8))
    capsys.readouterr()
    code, _ = train({**setup, "data": str(data)}, ckdir, "--resume", str(ckdir), "--epochs", "2")
    line = one_line(capsys)
    assert code == 2 and "no longer fits" in line and "5" in line
