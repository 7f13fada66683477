"""The training command on a tiny synthetic IDX dataset and a tiny net: determinism,
exact resume, Ctrl-C, NaN stops, kill -9, and one-line errors."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet import checkpoint
from convnet import train as train_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIG = '''
LAYERS = [
    {"name": "data", "type": "data", "shape": [1, 12, 12]},
    {"name": "conv1", "type": "conv", "inputs": "data", "filters": 5, "size": 3, "neuron": "relu"},
    {"name": "pool1", "type": "pool", "inputs": "conv1", "mode": "max", "size": 3, "stride": 2},
    {"name": "fc2", "type": "fc", "inputs": "pool1", "outputs": 16, "neuron": "relu"},
    {"name": "drop2", "type": "dropout", "inputs": "fc2", "p": 0.5},
    {"name": "fc3", "type": "fc", "inputs": "drop2", "outputs": 3},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc3"},
]
HYPER = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "batch_size": 20, "epochs": 2,
         "init_std": 0.2, "bias_init": 0.0,
         "lr_schedule": {"type": "plateau", "factor": 10.0, "patience": 2, "max_drops": 3}}
'''


def write_idx(path, array):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_dataset(folder, n_train=100, n_test=30, seed=0, size=12):
    """3 classes: a bright bar (horizontal, vertical, diagonal) on noise, size x size."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 3, n).astype(np.uint8)
        images = rng.integers(0, 80, (n, size, size)).astype(np.uint8)
        for img, c in zip(images, labels):
            k = rng.integers(2, 10)
            if c == 0:
                img[k, :] = 255
            elif c == 1:
                img[:, k] = 255
            else:
                np.fill_diagonal(img, 255)
        write_idx(os.path.join(folder, f"{stem}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{stem}-labels-idx1-ubyte.gz"), labels)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    data = make_dataset(str(base / "bars"))
    config = base / "tiny.py"
    config.write_text(TINY_CONFIG)
    return {"data": data, "config": str(config)}


def run(setup, ckdir, *extra, on_step=None):
    lines = []
    argv = ["--config", setup["config"], "--data", setup["data"], "--device", "cpu",
            "--checkpoint-dir", str(ckdir), "--log-every", "1", "--no-progress", *extra]
    code = train_mod.main(argv, on_step=on_step, out=lines.append)
    return code, lines


def step_losses(ckdir):
    with open(os.path.join(ckdir, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "step"]


def weights(path):
    return checkpoint.load(path)["net"]


def test_trains_and_same_seed_gives_identical_losses(setup, tmp_path):
    code, lines = run(setup, tmp_path / "a", "--epochs", "4")
    assert code == 0, lines
    epochs = [l for l in lines if l.startswith("epoch ")]
    assert len(epochs) == 4 and "val top-1" in epochs[0] and "img/s" in epochs[0] and "lr" in epochs[0]
    state = checkpoint.load(tmp_path / "a" / "last.ckpt")
    assert state["epoch"] == 4 and state["global_step"] == 4 * 5     # 100 images / batch 20
    m = state["metrics"]
    assert m[-1]["train_loss"] < 0.8 * m[0]["train_loss"]            # it learns
    assert min(x["val_top1"] for x in m) < 0.3                        # chance is 2/3
    best = checkpoint.load(tmp_path / "a" / "best.ckpt")
    assert best["metrics"][-1]["val_top1"] == min(x["val_top1"] for x in m)

    code, _ = run(setup, tmp_path / "b", "--epochs", "4")
    assert code == 0
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")
    code, _ = run(setup, tmp_path / "c", "--epochs", "1", "--seed", "1")
    assert step_losses(tmp_path / "c") != step_losses(tmp_path / "a")[:5]


def test_resume_after_an_epoch_is_exact(setup, tmp_path):
    assert run(setup, tmp_path / "straight", "--epochs", "2")[0] == 0
    assert run(setup, tmp_path / "split", "--epochs", "1")[0] == 0
    code, lines = run(setup, tmp_path / "split", "--resume", str(tmp_path / "split" / "last.ckpt"),
                      "--epochs", "2")
    assert code == 0 and lines[0].startswith("resuming")
    assert step_losses(tmp_path / "split") == step_losses(tmp_path / "straight")
    a, b = weights(tmp_path / "straight" / "last.ckpt"), weights(tmp_path / "split" / "last.ckpt")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # resuming a finished run does nothing
    code, lines = run(setup, tmp_path / "split", "--resume", str(tmp_path / "split"))
    assert code == 0 and "nothing to do" in lines[-1]


@pytest.mark.parametrize("how", ["callback", "signal"])
def test_ctrl_c_mid_epoch_saves_and_resume_is_exact(setup, tmp_path, how):
    straight = tmp_path / "straight"
    assert run(setup, straight, "--epochs", "2")[0] == 0

    def interrupt(trainer):
        if trainer.global_step == 7:                  # epoch 2, batch 2
            if how == "callback":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)       # the real handler: a flag, stop after this step
    cut = tmp_path / "cut"
    code, _ = run(setup, cut, "--epochs", "2", on_step=interrupt)
    assert code == train_mod.EXIT_INTERRUPTED
    state = checkpoint.load(cut / "last.ckpt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 7)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    code, _ = run(setup, cut, "--resume", str(cut / "last.ckpt"))
    assert code == 0
    assert step_losses(cut) == step_losses(straight)
    a, b = checkpoint.load(straight / "last.ckpt"), checkpoint.load(cut / "last.ckpt")
    for k in a["net"]:
        np.testing.assert_array_equal(a["net"][k], b["net"][k])
    assert a["metrics"][-1]["train_loss"] == b["metrics"][-1]["train_loss"]


def test_emulated_kernels_train_like_the_numpy_reference(setup, tmp_path):
    try:
        import convnet._emu  # noqa: F401
    except ImportError:
        pytest.skip("CPU emulation extension not built")
    assert run(setup, tmp_path / "numpy", "--epochs", "1")[0] == 0
    code, lines = run(setup, tmp_path / "emu", "--epochs", "1", "--device", "emu")
    assert code == 0, lines
    a, b = step_losses(tmp_path / "numpy"), step_losses(tmp_path / "emu")
    assert [s for s, _ in a] == [s for s, _ in b]
    np.testing.assert_allclose([l for _, l in b], [l for _, l in a], rtol=1e-4)


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(setup, tmp_path, capsys):
    def poison(trainer):
        if trainer.global_step == 6:                  # first step of epoch 2
            trainer.net.params()[0].value[...] = np.nan
    code, _ = run(setup, tmp_path, "--epochs", "3", on_step=poison)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss is nan at step 7 (epoch 2, batch 2)" in err[0]
    state = checkpoint.load(tmp_path / "last.ckpt")
    assert state["epoch"] == 1
    assert all(np.all(np.isfinite(v)) for v in state["net"].values())


def test_non_finite_weights_at_an_epoch_end_are_not_saved(setup, tmp_path, capsys):
    def poison(trainer):
        if trainer.global_step == 5:                  # last step of epoch 1, before its checkpoint
            trainer.net.params()[0].value[0, 0, 0, 0] = np.inf
    code, _ = run(setup, tmp_path, "--epochs", "2", on_step=poison)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinity" in err[0] and "no epoch finished" in err[0]
    assert not (tmp_path / "last.ckpt").exists()


def test_huge_learning_rate_stops_with_exit_1(setup, tmp_path, capsys):
    code, _ = run(setup, tmp_path, "--epochs", "2", "--lr", "1e10")
    assert code == 1
    err = capsys.readouterr().err
    assert "at step" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_kill_9_then_resume(setup, tmp_path):
    ckdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "convnet.train", "--config", setup["config"], "--data", setup["data"],
           "--device", "cpu", "--checkpoint-dir", str(ckdir), "--epochs", "10000", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (ckdir / "last.ckpt").exists() and checkpoint.load(ckdir / "last.ckpt")["epoch"] >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint written within 60 s")
    finally:
        proc.kill()                                   # SIGKILL, wherever it is
        proc.wait()
    epoch = checkpoint.load(ckdir / "last.ckpt")["epoch"]      # whole, even mid-write
    (ckdir / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")   # as a kill mid-save leaves
    code, _ = run(setup, ckdir, "--resume", str(ckdir / "last.ckpt"), "--epochs", str(epoch + 1))
    assert code == 0
    assert checkpoint.load(ckdir / "last.ckpt")["epoch"] == epoch + 1
    assert not [p for p in os.listdir(ckdir) if p.endswith(".tmp")]     # stale temporaries removed


def test_sigint_to_a_running_command_saves_and_exits_130(setup, tmp_path):
    ckdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "convnet.train", "--config", setup["config"], "--data", setup["data"],
           "--device", "cpu", "--checkpoint-dir", str(ckdir), "--epochs", "10000", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (ckdir / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == train_mod.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "saved" in err and "--resume" in err
    state = checkpoint.load(ckdir / "last.ckpt")
    assert state["global_step"] == 5 * state["epoch"] + state["step_in_epoch"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "convnet.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--config", "no-such-net"], "unknown config"),
    (["--data", "/no/such/folder"], "no such file"),
    (["--batch-size", "0"], "batch-size"),
    (["--epochs", "0"], "epochs"),
    (["--gpus", "0,1", "--device", "cpu"], "--gpus"),
    (["--resume", "/no/such.ckpt"], "checkpoint not found"),
    (["--lr", "-1"], "--lr"),
    (["--lr-schedule", "plateau", "--lr-steps", "3"], "--lr-steps needs"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    r = cli(*args, "--checkpoint-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and message in lines[0], r.stderr
    assert lines[0].startswith("convnet.train: error: ")


def test_no_gpu_errors(tmp_path):
    from convnet.backend import gpu_count
    if gpu_count():
        pytest.skip("a GPU is present")
    for args in (["--device", "cuda"], ["--gpus", "0,1"]):
        r = cli(*args, "--checkpoint-dir", str(tmp_path))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "GPU" in r.stderr and "Traceback" not in r.stderr


def test_resume_refuses_changed_settings_and_bad_files(setup, tmp_path, capsys):
    assert run(setup, tmp_path, "--epochs", "1")[0] == 0
    capsys.readouterr()
    code, _ = run(setup, tmp_path, "--resume", str(tmp_path / "last.ckpt"), "--batch-size", "7")
    assert code == 2 and "differs from the checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    code, _ = run(setup, tmp_path, "--resume", str(tmp_path / "junk.ckpt"))
    err = capsys.readouterr().err
    assert code == 2 and "not a readable convnet checkpoint" in err and len(err.strip().splitlines()) == 1


def test_holdout_validates_on_training_images_kept_out(setup, tmp_path, capsys):
    code, lines = run(setup, tmp_path / "h", "--epochs", "1", "--holdout", "40")
    assert code == 0, lines
    state = checkpoint.load(tmp_path / "h" / "last.ckpt")
    assert state["metrics"][0]["val_images"] == 40 and state["global_step"] == 3    # 60 left, batch 20
    code, _ = run(setup, tmp_path / "bad", "--holdout", "100")
    assert code == 2 and "only 100 images" in capsys.readouterr().err


def test_larger_images_are_cropped_to_the_input(setup, tmp_path):
    data = make_dataset(str(tmp_path / "bars14"), n_train=40, n_test=10, size=14)
    code, lines = run({**setup, "data": data}, tmp_path / "ck", "--epochs", "1")
    assert code == 0, lines
    assert checkpoint.load(tmp_path / "ck" / "last.ckpt")["metrics"][0]["val_images"] == 10


def test_data_that_does_not_fit_the_config(setup, tmp_path, capsys):
    code, _ = run(setup, tmp_path, "--config", "fashion")      # 28x28 net, 12x12 data
    err = capsys.readouterr().err
    assert code == 2 and "takes 1x28x28 inputs" in err and len(err.strip().splitlines()) == 1


def test_output_layer_follows_the_dataset_classes(setup, tmp_path):
    """A config made for 10 classes trains on the 3-class set: the output layer is
    resized (and says so), and the checkpoint keeps the resized config."""
    wide = tmp_path / "ten.py"
    wide.write_text(TINY_CONFIG.replace('"outputs": 3', '"outputs": 10'))
    lines = []
    code = train_mod.main(["--config", str(wide), "--data", setup["data"], "--device", "cpu",
                           "--checkpoint-dir", str(tmp_path / "run"), "--epochs", "1", "--no-progress"],
                          out=lines.append)
    assert code == 0, lines
    assert any(l.startswith("fc3: 10 -> 3 outputs") for l in lines), lines
    state = checkpoint.load(tmp_path / "run" / "last.ckpt")
    assert state["net"]["fc3.w"].shape == (3, 16)


def _emu_built():
    from convnet import kernels
    return kernels.emulation_available()


@pytest.mark.skipif(not _emu_built(), reason="the CUDA emulation (convnet._emu) is not built: run make")
def test_two_columns_on_two_emulated_devices_train_and_resume(tmp_path):
    """`--device emu --gpus 0,1` (the README's example): the two-column net's columns on two
    emulated devices, crossing by emulated peer copies; 1 epoch + resume equals 2 epochs."""
    data = make_dataset(str(tmp_path / "bars28"), n_train=16, n_test=8, size=28)
    common = ["--data", data, "--device", "emu", "--gpus", "0,1", "--batch-size", "8", "--log-every", "1",
              "--no-progress"]
    lines = []
    assert train_mod.main(["--config", "two-column-tiny", *common, "--epochs", "2",
                           "--checkpoint-dir", str(tmp_path / "straight")], out=lines.append) == 0
    text = "\n".join(lines)
    assert "emulated peer copy" in text and "on emu0, emu1" in text and "fused layers:" in text
    assert train_mod.main(["--config", "two-column-tiny", *common, "--epochs", "1",
                           "--checkpoint-dir", str(tmp_path / "part")], out=lambda s: None) == 0
    assert train_mod.main(["--resume", str(tmp_path / "part"), "--epochs", "2", *common[2:]],
                          out=lambda s: None) == 0
    straight, resumed = step_losses(tmp_path / "straight"), step_losses(tmp_path / "part")
    assert len(straight) == 4 and resumed == pytest.approx(straight, rel=1e-5)
