"""convnet.experiment: the variants, the measurements, the summaries, and every
experiment's --quick run (synthetic data, seconds), stopped and resumed."""
import json
import os
import re

import numpy as np
import pytest

from convnet import experiment as ex
from convnet.net import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TAR = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    if os.environ.get("CONVNET_CACHE") is None:
        monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return ex.make_synthetic(str(tmp_path_factory.mktemp("synthetic")))


def quick(tmp_path, name, data, *extra, say=lambda m: None):
    argv = [name, "--quick", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--data", data, *extra]
    return ex.main(argv, say=say)


def rows(tmp_path):
    folder = tmp_path / "out" / "rows"
    return {p[:-5]: json.load(open(folder / p)) for p in sorted(os.listdir(folder)) if p.endswith(".json")}


# --- variants ------------------------------------------------------------------

def kinds(cfg):
    return [L["type"] for L in cfg["LAYERS"]]


def test_variants_change_only_what_they_say():
    base = ex.make_config([])
    assert kinds(base).count("lrn") == 2 and "dropout" not in kinds(base)
    t = ex.make_config([ex.tanh])
    assert [L.get("neuron") for L in t["LAYERS"]] == [
        "tanh" if L.get("neuron") == "relu" else L.get("neuron") for L in base["LAYERS"]]
    n = ex.make_config([ex.no_lrn])
    assert "lrn" not in kinds(n) and len(n["LAYERS"]) == len(base["LAYERS"]) - 2
    by = {L["name"]: L for L in n["LAYERS"]}
    assert by["conv2"]["inputs"] == "pool1" and by["pool2"]["inputs"] == "conv2"
    p = ex.make_config([ex.non_overlapping_pools])
    assert all((L["size"], L["stride"]) == (2, 2) for L in p["LAYERS"] if L["type"] == "pool")
    d = ex.make_config([ex.dropout])
    assert {L["name"]: L for L in d["LAYERS"]}["fc10"]["inputs"] == "drop"
    assert ex.make_config([ex.no_lighting])["HYPER"]["augment"]["lighting"] == 0
    assert base["HYPER"]["augment"]["lighting"] > 0


@pytest.mark.parametrize("variant", sorted(ex.VARIANTS))
def test_every_variant_builds_and_keeps_the_output(variant):
    net = Net(ex.make_config(ex.VARIANTS[variant][0]), seed=0)
    x = np.random.default_rng(0).normal(0, 0.2, (2, 3, 24, 24)).astype(np.float32)
    assert np.asarray(net.forward(x, train=False)).shape == (2, 10)


def test_written_config_loads_back(tmp_path):
    from convnet.configs import load_config
    cfg = ex.make_config([ex.tanh, ex.dropout])
    path = str(tmp_path / "v.py")
    ex.write_config(cfg, path, "a test variant")
    back = load_config(path)
    assert back["LAYERS"] == cfg["LAYERS"] and back["HYPER"] == cfg["HYPER"]


# --- measurements and summaries --------------------------------------------------

def test_errors_top1_top5():
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.1, 0.5, 0.2, 0.1, 0.05, 0.05]])
    assert ex.errors(probs, np.array([0, 0])) == (0.5, 0.0)
    assert ex.errors(probs, np.array([5, 2])) == (1.0, 0.5)


def epochs_of(errors, seconds_per_epoch):
    return [{"epoch": i + 1, "train_error": e, "train_seconds": seconds_per_epoch * (i + 1), "test_top1": e,
             "test_top5": e / 2} for i, e in enumerate(errors)]


def test_relu_vs_tanh_ratio(tmp_path):
    rows_ = [{"row": "relu-s0", "variant": "relu", "seed": 0, "epochs": epochs_of([0.6, 0.35, 0.24, 0.2], 10)},
             {"row": "tanh-s0", "variant": "tanh", "seed": 0,
              "epochs": epochs_of([0.7, 0.55, 0.45, 0.38, 0.3, 0.27, 0.25, 0.22], 12)}]
    s = {"target": 0.25, "seeds": [0]}
    lines, verdict, plots = ex.summarize_relu_vs_tanh(rows_, s, str(tmp_path))
    # ReLU reaches 25% at epoch 3 (30 s), tanh at epoch 7 (84 s)
    assert any(re.match(r"\| 25% \| 0 \| 3 \(30\) \| 7 \(84\) \| 2.33 \| 2.80 \|", x) for x in lines), lines
    assert "2.33x the epochs and 2.80x the training seconds" in verdict[0]
    short = [rows_[0], dict(rows_[1], epochs=rows_[1]["epochs"][:5])]
    _, verdict, _ = ex.summarize_relu_vs_tanh(short, s, str(tmp_path))
    assert "more than 1.7x" in verdict[0]
    assert all(os.path.getsize(tmp_path / p) > 0 for p in plots)


def test_by_variant_spread_and_difference(tmp_path):
    def row(v, seed, err):
        return {"row": f"{v}-s{seed}", "variant": v, "seed": seed, "epochs": epochs_of([0.5, err], 1)}
    rows_ = [row("base", 0, 0.30), row("base", 1, 0.32), row("dropout", 0, 0.27), row("dropout", 1, 0.29)]
    s = {"experiment": "ablations"}
    lines, verdict, _ = ex.summarize_by_variant(rows_, s, str(tmp_path), "base")
    assert any(x.startswith("| dropout |") and "28.00% (min 27.00, max 29.00, n=2)" in x and "-3.00 points" in x
               for x in lines), lines
    assert "larger than the largest seed-to-seed spread measured here (2.00 points)" in verdict[0]


# --- the --quick runs ----------------------------------------------------------------

def test_quick_relu_vs_tanh_stops_and_resumes_to_the_same_numbers(tmp_path, synthetic):
    assert quick(tmp_path / "a", "relu-vs-tanh", synthetic) == 0
    table = (tmp_path / "a" / "out" / "table.md").read_text()
    assert "| relu-s0 |" in table and "| tanh-s0 |" in table and "--quick" in table
    for png in ("train_error.png", "train_error_seconds.png"):
        assert (tmp_path / "a" / "out" / png).stat().st_size > 1000
    settings = json.load(open(tmp_path / "a" / "out" / "settings.json"))
    assert settings["seeds"] == [0] and settings["env"]["numpy"] == np.__version__
    assert settings["wall_total"] > 0

    seen = []

    def stop_after_two_epochs(line):            # Ctrl-C arrives during the second epoch's report
        seen.append(line)
        if sum("epoch " in x for x in seen) == 2:
            raise KeyboardInterrupt
    b = tmp_path / "b"
    relu = ("--variants", "relu")
    assert quick(b, "relu-vs-tanh", synthetic, *relu, say=stop_after_two_epochs) == ex.EXIT_INTERRUPTED
    assert not (b / "out" / "table.md").exists() and not (b / "out" / "rows").exists()
    assert quick(b, "relu-vs-tanh", synthetic, *relu) == ex.EXIT_USAGE      # there is a run: needs --resume
    assert quick(b, "relu-vs-tanh", synthetic, *relu, "--resume") == 0
    assert quick(b, "relu-vs-tanh", synthetic, *relu, "--resume", "--epochs", "4") == ex.EXIT_USAGE
    ra, rb = rows(tmp_path / "a"), rows(b)
    assert list(ra) == ["relu-s0", "tanh-s0"] and list(rb) == ["relu-s0"]
    assert len(rb["relu-s0"]["epochs"]) == 3
    for name in rb:
        for ea, eb in zip(ra[name]["epochs"], rb[name]["epochs"], strict=True):
            for key in ("train_error", "test_top1", "test_top5", "train_loss", "lr"):
                assert ea[key] == eb[key], (name, ea["epoch"], key)


@pytest.mark.parametrize("name,rows_expected,pngs", [
    ("lrn", ["lrn-s0", "no-lrn-s0"], ["test_error.png", "train_error.png"]),
    ("ablations", ["base-s0", "dropout-s0", "no-lighting-s0", "pool-2x2-s0"], ["test_error.png"]),
    ("precision", ["bf16-s0", "fp32-s0", "tf32-s0"], ["test_error.png", "train_error.png"]),
])
def test_quick_experiments(tmp_path, synthetic, name, rows_expected, pngs):
    assert quick(tmp_path, name, synthetic, "--epochs", "1") == 0
    assert sorted(rows(tmp_path)) == rows_expected
    assert sorted(p for p in os.listdir(tmp_path / "out" / "rows") if p.endswith(".config.py")) == [
        r + ".config.py" for r in rows_expected]
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.startswith(f"# {name}:") and "Scale:" in table and "python -m convnet.experiment" in table
    for png in pngs:
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_precision_rows_train_and_measure_in_their_precision(tmp_path, synthetic):
    """Each precision row's checkpoint records the precision it trained in, the row is
    measured in it, and the three rows differ (the rounding reaches the products)."""
    from convnet import checkpoint
    assert quick(tmp_path, "precision", synthetic, "--epochs", "1") == 0
    got = rows(tmp_path)
    losses = set()
    for name, want in (("fp32-s0", "fp32"), ("tf32-s0", "tf32"), ("bf16-s0", "bf16")):
        state = checkpoint.load(got[name]["checkpoint"])
        assert state["run"]["precision"] == want
        assert got[name]["epochs"][-1]["precision"] == want
        losses.add(got[name]["epochs"][-1]["train_loss"])
    assert len(losses) == 3
    assert "within 0.3 points" in (tmp_path / "out" / "table.md").read_text()


def test_quick_ten_crop_matches_convnet_evaluate(tmp_path, synthetic):
    """ten-crop --quick trains a row and measures it; its centre-crop and ten-crop errors
    are the ones `python -m convnet.evaluate` reports for the same checkpoint."""
    from convnet import evaluate
    assert quick(tmp_path, "ten-crop", synthetic, "--epochs", "1") == 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert re.search(r"\| base-s0 \| 32 \| \d+\.\d\d% \| \d+\.\d\d% \|", table), table
    assert (tmp_path / "out" / "ten_crop.png").stat().st_size > 1000
    row = rows(tmp_path)["base-s0"]
    lines = []
    for crops in ("center", "ten"):
        assert evaluate.main([row["checkpoint"], "--data", synthetic, "--crops", crops], out=lines.append) == 0
    got = [float(m) / 100 for m in re.findall(r"top-1 error (\d+\.\d+)%", "\n".join(lines))]
    s = json.load(open(tmp_path / "out" / "settings.json"))
    (centre, _), (ten, _) = s["ten_crop"][0]["center"], s["ten_crop"][0]["ten"]
    assert got == pytest.approx([centre, ten], abs=1e-4)
    assert row["epochs"][-1]["test_top1"] == pytest.approx(centre, abs=1e-9)


def test_without_lrn_drops_every_rows_lrn_layers(tmp_path, synthetic):
    assert quick(tmp_path, "relu-vs-tanh", synthetic, "--epochs", "1", "--without-lrn") == 0
    for row in ("relu-s0", "tanh-s0"):
        text = (tmp_path / "out" / "rows" / f"{row}.config.py").read_text()
        assert "'lrn'" not in text and "every LRN layer removed" in text
    assert "every net without its LRN layers" in (tmp_path / "out" / "table.md").read_text()
    assert any(L.get("type") == "lrn" for L in ex.make_config([])["LAYERS"])    # the base net has them


def test_bad_input_one_line(tmp_path, synthetic, capsys):
    assert quick(tmp_path, "lrn", synthetic, "--without-lrn") == ex.EXIT_USAGE
    assert quick(tmp_path, "lrn", synthetic, "--variants", "relu") == ex.EXIT_USAGE
    assert quick(tmp_path, "lrn", synthetic, "--seeds", "a,b") == ex.EXIT_USAGE
    assert quick(tmp_path, "lrn", synthetic, "--checkpoint", "x.ckpt") == ex.EXIT_USAGE
    assert quick(tmp_path, "ten-crop", synthetic, "--checkpoint", str(tmp_path / "none.ckpt")) == ex.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(x.startswith("convnet.experiment: ") for x in err)


def test_missing_dataset_is_one_line(tmp_path, capsys):
    """A dataset that is not there: the loader's DataError as one line and exit 2, no traceback."""
    rc = ex.main(["lrn", "--data", str(tmp_path / "no-such-data"), "--epochs", "1",
                  "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")], say=lambda *a: None)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == ex.EXIT_USAGE and len(err) == 1 and err[0].startswith("convnet.experiment: error: ")
    assert "no-such-data" in err[0]


@pytest.mark.skipif(not os.path.exists(CIFAR_TAR), reason="CIFAR-10 archive not present")
def test_cifar10_fits_the_four_layer_net(monkeypatch):
    from convnet.data import load_dataset
    monkeypatch.delenv("CONVNET_CACHE", raising=False)               # share the one-time extraction
    te = load_dataset(CIFAR_TAR, "test")
    net = Net(ex.make_config([]), seed=0)
    probs = ex.predict(net, te.images[:16], te.images[:256].mean(axis=0).astype(np.float32), 24, "ten")
    assert probs.shape == (16, 10) and np.allclose(probs.sum(axis=1), 1)
