"""convnet.show: every picture at tiny scale (file written, right size, not blank),
and the pieces behind them (filter grids, last-hidden-layer features, neighbours)."""
import os

import numpy as np
import pytest
from PIL import Image

from convnet import experiment as ex
from convnet import show, train

TWO_COLUMNS = '''
LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 12, 12]},
    {"name": "conv1a", "type": "conv", "inputs": "data", "column": 0, "filters": 4, "size": 3, "pad": 1,
     "neuron": "relu"},
    {"name": "conv1b", "type": "conv", "inputs": "data", "column": 1, "filters": 6, "size": 3, "pad": 1,
     "neuron": "relu"},
    {"name": "pool1a", "type": "pool", "inputs": "conv1a", "column": 0, "mode": "max", "size": 3, "stride": 2},
    {"name": "pool1b", "type": "pool", "inputs": "conv1b", "column": 1, "mode": "max", "size": 3, "stride": 2},
    {"name": "fc1a", "type": "fc", "inputs": ["pool1a", "pool1b"], "column": 0, "outputs": 8, "neuron": "relu"},
    {"name": "fc1b", "type": "fc", "inputs": ["pool1a", "pool1b"], "column": 1, "outputs": 8, "neuron": "relu"},
    {"name": "drop", "type": "dropout", "inputs": "fc1b", "column": 1, "p": 0.5},
    {"name": "out", "type": "fc", "inputs": ["fc1a", "drop"], "outputs": 4},
    {"name": "loss", "type": "softmax_loss", "inputs": "out"},
]
HYPER = {"lr": 0.05, "batch_size": 16, "epochs": 1, "init_std": 0.1, "lr_schedule": {"type": "constant"}}
'''


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    if os.environ.get("CONVNET_CACHE") is None:
        monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-column net trained for two epochs on the synthetic set: (run folder, data folder)."""
    base = tmp_path_factory.mktemp("show")
    data = ex.make_synthetic(str(base / "data"))
    cfg = base / "two_columns.py"
    cfg.write_text(TWO_COLUMNS)
    d = str(base / "run")
    rc = train.main(["--config", str(cfg), "--data", data, "--epochs", "2", "--no-progress",
                     "--checkpoint-dir", d, "--log-every", "2"], out=lambda *a: None)
    assert rc == 0
    return d, data


def picture(path, size):
    """The PNG exists, has the expected pixel size and is not blank."""
    with Image.open(path) as im:
        assert im.size == size
        a = np.asarray(im.convert("RGB"), np.float64)
    assert a.std() > 10 and len(np.unique(a.reshape(-1, 3), axis=0)) > 50


def test_curves(run, tmp_path):
    out = str(tmp_path / "c.png")
    assert show.main(["curves", run[0], "--out", out], out=lambda *a: None) == 0
    picture(out, (1200, 650))
    epochs, steps = show.read_log(os.path.join(run[0], "log.jsonl"))
    assert [r["epoch"] for r in epochs] == [1, 2] and steps
    assert show.batches_per_epoch(steps) == 8            # 128 images, batch 16


def test_filters_one_grid_per_column(run, tmp_path):
    state = show.load_checkpoint(run[0])
    assert show.first_layers(state["config"]) == ["conv1a", "conv1b"]
    out = str(tmp_path / "f.png")
    assert show.main(["filters", os.path.join(run[0], "last.ckpt"), "--out", out], out=lambda *a: None) == 0
    picture(out, (1000, 540))


def test_filter_grid_scaling():
    w = np.zeros((5, 3, 2, 2))
    w[1, 0, 0, 0] = 2.0
    w[2, 2, 1, 1] = -2.0
    g = show.filter_grid(w, cols=3)
    assert g.shape == (2 * 3 - 1, 3 * 3 - 1, 3)
    assert g[0, 3, 0] == 1.0 and g[1, 7, 2] == 0.0           # +max -> 1, -max -> 0
    assert g[0, 0, 0] == 0.5 and g[0, 2, 0] == 1.0          # 0 -> mid-grey; the gaps are white


def test_predictions(run, tmp_path):
    out = str(tmp_path / "p.png")
    assert show.main(["predictions", run[0], "--out", out], out=lambda *a: None) == 0
    picture(out, (1280, 380))


def test_neighbours(run, tmp_path):
    out = str(tmp_path / "n.png")
    assert show.main(["neighbours", run[0], "--out", out, "--count", "3", "--k", "4"], out=lambda *a: None) == 0
    picture(out, (650, 435))


def test_features_are_the_output_layers_input(run):
    """fc 'out' applied to the features (fc1a and the dropout's input fc1b) gives the net's logits."""
    from convnet.data import load_dataset, eval_views
    state = show.load_checkpoint(run[0])
    assert show.last_hidden(state["config"]) == ["fc1a", "fc1b"]
    ds = load_dataset(run[1], "test")
    f = show.features(state, ds.images[:10], ds.mean)
    assert f.shape == (10, 16)
    logits = np.asarray(show._net(state).forward(eval_views(ds.images[:10], 12, "center", ds.mean)[0],
                                                 train=False))
    w, b = state["net"]["out.w"], state["net"]["out.b"]
    np.testing.assert_allclose(f @ w.T + b, logits, rtol=1e-4, atol=1e-5)


def test_nearest():
    rng = np.random.default_rng(0)
    pool, q = rng.normal(size=(50, 7)), rng.normal(size=(4, 7))
    brute = np.argsort(((q[:, None, :] - pool[None]) ** 2).sum(-1), axis=1)[:, :3]
    np.testing.assert_array_equal(show.nearest(q, pool, 3), brute)


def test_errors_are_one_line(tmp_path, capsys):
    assert show.main(["curves", str(tmp_path)], out=lambda *a: None) == 2
    (tmp_path / "log.jsonl").write_text('{"type": "step", "step": 1, "epoch": 1, "batch": 1, "loss": 1}\n')
    assert show.main(["curves", str(tmp_path)], out=lambda *a: None) == 2
    assert show.main(["filters", str(tmp_path / "none.ckpt")], out=lambda *a: None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(x.startswith("convnet.show: ") for x in err)


def test_missing_dataset_is_one_line(run, tmp_path, capsys):
    """predictions on a dataset that is not there: the loader's DataError as one line and exit 2."""
    ckpt = os.path.join(run[0], "last.ckpt")
    rc = show.main(["predictions", ckpt, "--data", str(tmp_path / "no-such-data")], out=lambda *a: None)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("convnet.show: error: ") and "no-such-data" in err[0]
