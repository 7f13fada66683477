"""convnet.tune: the candidates, the model's choice, the cache file and the command
without a GPU (the timing path needs one: it runs under the gpu marker)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convnet import tune
from convnet.kernel_ops import conv

ROOT = Path(__file__).resolve().parents[1]


def _geo(i):
    label, xs, ws, s, p, g = conv.ALEXNET_SHAPES[i]
    return conv.Geometry.of("t", xs, ws, s, p, g)


def test_candidates_are_kept_versions_that_apply():
    conv3 = _geo(2)
    for pass_ in tune.PASSES:
        cands = tune.candidates(conv3, pass_)
        assert {c.version for c in cands} <= set(conv.VERSIONS) - {"v1"}
        for v in ("winograd", "winograd4"):
            assert (v in {c.version for c in cands}) == (pass_ != "bwd_filter")
        assert all(tune.predict(conv3, pass_, c) is not None for c in cands)
    conv2 = _geo(1)                                          # 5x5: no Winograd
    assert not {"winograd", "winograd4"} & {c.version for c in tune.candidates(conv2, "fwd")}


def test_model_best_is_the_fastest_predicted_candidate():
    for i in range(5):
        geo = _geo(i)
        for pass_ in tune.PASSES:
            if i == 0 and pass_ == "bwd_data":
                continue
            best, t = tune.model_best(geo, pass_)
            times = [tune.predict(geo, pass_, c)["seconds"] for c in tune.candidates(geo, pass_)]
            assert t == min(times) and t > geo.flops / tune.PEAK * 0.4      # F(4x4): < 4x saving
    # the model orders the versions as their main loops do: v4 before v3 before v2 (conv2 fwd)
    geo = _geo(1)
    t = {v: tune.predict(geo, "fwd", tune.Candidate(v))["seconds"] for v in ("v2", "v3", "v4")}
    assert t["v4"] < t["v3"] < t["v2"]


def test_choice_on_the_emulation_is_shipped():
    assert tune.choice(_geo(2), "fwd", np.zeros(1, np.float32)) is None


def test_cache_round_trip_is_readable_json(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNET_CACHE_DIR", str(tmp_path))
    path = tune.cache_path("NVIDIA H100 80GB HBM3", 13000)
    assert path.startswith(str(tmp_path)) and "nvidia-h100-80gb-hbm3" in path and "driver13000" in path
    assert tune.sources_hash() in path
    key = tune.shape_key("fwd", _geo(2))
    assert key == "fwd x128x256x13x13 w384x256x3x3 s1x1 p1x1 g1"
    assert tune.load_cache(path) == {}                         # missing: empty, no error
    tune.save_cache(path, "NVIDIA H100 80GB HBM3", 13000,
                    {key: {"version": "v4", "tile_rows": 128, "splits": None, "ms": 0.5}})
    text = Path(path).read_text()
    data = json.loads(text)
    assert data["device"] == "NVIDIA H100 80GB HBM3" and data["sources"] == tune.sources_hash()
    assert tune.load_cache(path)[key]["version"] == "v4"
    assert "\n " in text                                       # indented: one field a line
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no temporary left
    Path(path).write_text("{not json")
    assert tune.load_cache(path) == {}


def test_sources_hash_follows_the_kernel_source(tmp_path, monkeypatch):
    from convnet import kernels
    src = tmp_path / "kernels"
    shutil.copytree(ROOT / "kernels", src)
    monkeypatch.setattr(kernels, "KERNEL_DIR", str(src))
    monkeypatch.setattr(kernels.default_library(), "include_dirs", [str(src)], raising=False)
    before = tune.sources_hash()
    (src / "conv.cu").write_text((src / "conv.cu").read_text() + "\n// changed\n")
    assert tune.sources_hash() != before


def test_tune_without_gpu_prints_the_models_choices():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "convnet.tune", "--split", "device", "--passes", "fwd"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if " | " in l]
    assert [l.split()[0] for l in lines] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert "nothing timed" in r.stdout and "winograd" in lines[2]
    r = subprocess.run([sys.executable, "-m", "convnet.tune", "--passes", "sideways"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "unknown pass sideways" in r.stderr


def test_ffma_shares_match_the_built_sass():
    """tune.FFMA_SHARE against benchmarks/conv_sass.py on build/kernels/conv.fatbin (needs
    the fatbin and cuobjdump; skipped otherwise)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import conv_sass
    if not os.path.exists(conv_sass.FATBIN):
        pytest.skip("no build/kernels/conv.fatbin (nvcc missing)")
    try:
        conv_sass.cuobjdump()
    except SystemExit:
        pytest.skip("no cuobjdump")
    got = {k: conv_sass.ffma_fraction(b) for k, b in conv_sass.main_loops().items()}
    for kernel, share in tune.FFMA_SHARE.items():
        assert abs(got[kernel] - share) < 0.002, (kernel, got[kernel], share)


@pytest.mark.gpu
def test_tune_on_gpu_writes_checked_choices(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONVNET_CACHE_DIR", str(tmp_path))
    geo = conv.Geometry.of("t", (8, 16, 13, 13), (32, 16, 3, 3), 1, 1, 1)
    path = tune.tune_gpu([("small", geo)], ("fwd",), repeat=2)
    entry = tune.load_cache(path)[tune.shape_key("fwd", geo)]
    assert entry["version"] in conv.VERSIONS and entry["ms"] > 0 and entry["timed"]
