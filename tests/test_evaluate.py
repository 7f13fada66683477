"""The evaluation command: a trained checkpoint's errors match training's
validation numbers; ten-crop averaging against a hand-built reference; errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from convnet import checkpoint, evaluate, reference
from convnet import train as train_mod
from convnet.configs import load_config
from convnet.net import Net

from test_train import TINY_CONFIG, make_dataset, write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    data = make_dataset(str(base / "bars"))
    config = base / "tiny.py"
    config.write_text(TINY_CONFIG)
    ck = base / "run"
    code = train_mod.main(["--config", str(config), "--data", data, "--device", "cpu", "--epochs", "2",
                           "--checkpoint-dir", str(ck), "--no-progress"], out=lambda s: None)
    assert code == 0
    return {"base": base, "data": data, "config": str(config), "ckpt": str(ck / "last.ckpt")}


def test_matches_the_training_validation_error(trained):
    lines = []
    assert evaluate.main([trained["ckpt"], "--device", "cpu", "--batch-size", "7"], out=lines.append) == 0
    state = checkpoint.load(trained["ckpt"])
    top1 = state["metrics"][-1]["val_top1"]         # IDX sets: validation = test split
    assert f"top-1 error {100 * top1:.2f}%" in lines[-1] and "whole image" in lines[-1]
    lines = []
    assert evaluate.main([trained["ckpt"], "--crops", "ten", "--limit", "10"], out=lines.append) == 0
    assert lines[0].startswith("note:") and "10 images" in lines[-1]


def test_ten_crops_average_the_softmax_of_the_paper_views(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    cfg = load_config(str(path))
    net = Net(cfg, seed=3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 15, 15, 1)).astype(np.uint8)   # 15 > 12: crops
    labels = rng.integers(0, 3, 9).astype(np.int32)
    mean = images.mean(axis=0).astype(np.float32)

    def view(oy, ox, flip):
        v = (images[:, oy:oy + 12, ox:ox + 12].astype(np.float32) - mean[oy:oy + 12, ox:ox + 12]) / 255
        v = v.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(v[..., ::-1] if flip else v)

    corners = [(0, 0), (0, 3), (3, 0), (3, 3), (1, 1)]
    probs = sum(reference.softmax_forward(net.forward(view(y, x, f), train=False).astype(np.float64))
                for f in (0, 1) for y, x in corners) / 10
    np.testing.assert_allclose(evaluate.predict(net, images, mean, 12, "ten", batch_size=4), probs,
                               rtol=1e-6, atol=1e-9)
    want = (reference.topk_errors(probs, labels, 1) / 9, 0.0)       # 3 classes: top-5 never misses
    assert evaluate.evaluate(net, images, labels, mean, 12, "ten", batch_size=4) == pytest.approx(want)
    centre = reference.softmax_forward(net.forward(view(1, 1, 0), train=False).astype(np.float64))
    np.testing.assert_allclose(evaluate.predict(net, images, mean, 12, "center", batch_size=5), centre,
                               rtol=1e-6, atol=1e-9)
    assert not np.allclose(centre, probs)                             # the views do differ


def test_command_on_cropped_data_and_errors(trained, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    rng = np.random.default_rng(1)
    for stem, n in (("train", 20), ("t10k", 11)):
        write_idx(str(big / f"{stem}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 16, 16)).astype(np.uint8))
        write_idx(str(big / f"{stem}-labels-idx1-ubyte.gz"), rng.integers(0, 3, n).astype(np.uint8))
    r = subprocess.run([sys.executable, "-m", "convnet.evaluate", trained["ckpt"], "--data", str(big),
                        "--crops", "ten"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "11 images, ten crops" in r.stdout, r.stderr

    small = tmp_path / "small"
    small.mkdir()
    for stem in ("train", "t10k"):
        write_idx(str(small / f"{stem}-images-idx3-ubyte.gz"), np.zeros((4, 8, 8), np.uint8))
        write_idx(str(small / f"{stem}-labels-idx1-ubyte.gz"), np.zeros(4, np.uint8))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    for args, message in [([str(tmp_path / "none.ckpt")], "checkpoint not found"),
                          ([str(junk)], "not a readable convnet checkpoint"),
                          ([trained["ckpt"], "--data", "/no/such/data"], "no such file"),
                          ([trained["ckpt"], "--data", str(small)], "takes 1x12x12 inputs"),
                          ([trained["ckpt"], "--batch-size", "0"], "batch-size"),
                          ([trained["ckpt"], "--crops", "five"], "--crops")]:
        r = subprocess.run([sys.executable, "-m", "convnet.evaluate", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert lines[0].startswith("convnet.evaluate: error: ")
