"""The threaded input pipeline: order, overlap, bounded read-ahead, shutdown,
and errors raised in a stage re-raised in the consumer."""
import os
import threading
import time

import numpy as np
import pytest

from convnet import backend as B
from convnet.data.pipeline import Pipeline, PipelineError


def _pipeline_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("pipe-", "loader-"))]


def jitter(seed):
    rng = np.random.default_rng(seed)

    def stage(x):
        time.sleep(rng.uniform(0, 0.002))
        return x
    return stage


def test_order_is_kept_with_uneven_stage_times():
    p = Pipeline(range(200), [jitter(1), lambda x: x * 2, jitter(2)], depth=2, name="pipe-order")
    assert list(p) == [2 * i for i in range(200)]
    assert not p.alive_threads


def test_stages_overlap():
    """Three stages of 20 ms on 10 items: about 12 steps of 20 ms when overlapped, 30 when not."""
    def slow(x):
        time.sleep(0.02)
        return x
    t = time.perf_counter()
    assert list(Pipeline(range(10), [slow, slow, slow], name="pipe-overlap")) == list(range(10))
    assert time.perf_counter() - t < 0.02 * 10 * 3 * 0.75


def test_read_ahead_is_bounded():
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            yield i
    p = Pipeline(source(), [lambda x: x, lambda x: x, lambda x: x], depth=1, name="pipe-bounded")
    it = iter(p)
    assert next(it) == 0
    time.sleep(0.2)
    # one item held by each of 3 threads plus one in each of 3 queues, and the one consumed
    assert len(produced) <= 8
    p.close()
    assert not p.alive_threads


def test_break_and_context_manager_stop_every_thread():
    with Pipeline(iter(range(10**9)), [lambda x: x, lambda x: x], name="pipe-break") as p:
        for i in p:
            if i == 5:
                break
    assert not p.alive_threads
    p.close()                                           # idempotent
    with pytest.raises(PipelineError, match="after close"):
        iter(p).__next__()


def test_consumer_exception_leaves_no_threads():
    p = Pipeline(iter(range(10**9)), [lambda x: x, lambda x: x], name="pipe-consumer-error")
    with pytest.raises(KeyError):
        for i in p:
            if i == 3:
                raise KeyError("consumer")
    assert not p.alive_threads


class Boom(Exception):
    pass


@pytest.mark.parametrize("where", ["source", "first", "middle", "last"])
def test_worker_exception_reaches_the_consumer(where):
    def source():
        for i in range(100):
            if where == "source" and i == 7:
                raise Boom("in the source")
            yield i

    def stage(name):
        def f(x):
            if where == name and x == 7:
                raise Boom(f"in stage {name}")
            return x
        return f
    p = Pipeline(source(), [stage("first"), stage("middle"), stage("last")], name="pipe-error")
    got = []
    with pytest.raises(Boom, match="in"):
        for x in p:
            got.append(x)
    assert got == list(range(7))                        # every item before the failing one
    assert not p.alive_threads


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one stage"):
        Pipeline(range(3), [])
    with pytest.raises(ValueError, match="depth"):
        Pipeline(range(3), [abs], depth=0)


def test_no_threads_left_behind():
    time.sleep(0.1)
    assert not _pipeline_threads()


# --- the loader over prepared shards (the pipeline's real use) ------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from PIL import Image
    from convnet import prepare as prep
    from convnet.data import load_dataset
    root = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        os.makedirs(root / "src" / c)
        for i in range(7):
            Image.fromarray(rng.integers(0, 256, (24, 26, 3), dtype=np.uint8)).save(root / "src" / c / f"{i}.png")
    prep.prepare(str(root / "src"), str(root / "out"), size=20, workers=1, shard_size=5, progress=False,
                 log=lambda m: None)
    return load_dataset(str(root / "out"), "train")


def expected_batches(ds, loader):
    """What the pipelined loader must yield: the same gather and augmentation, done serially."""
    from convnet.data import augment as aug
    images = np.asarray(ds.images)
    for b, idx in loader.batches():
        yield aug.augment_batch(images[idx], ds.mean, *loader.params(b, len(idx)), loader.crop), ds.labels[idx]


def test_prepared_loader_matches_serial_computation(prepared):
    from convnet.data import Augment, make_loader
    for train in (True, False):
        loader = make_loader(prepared, 4, train=train, seed=3, epoch=2, augment=Augment(crop=17))
        got = list(loader)
        want = list(expected_batches(prepared, loader))
        assert len(got) == len(want) == len(loader) == 6
        for (x, y), (wx, wy) in zip(got, want):
            assert np.array_equal(x, wx) and np.array_equal(y, wy)
        assert got[0][0].shape == (4, 3, 17, 17)
    assert loader.random is False
    assert make_loader(prepared, 4, train=True, augment=Augment(crop=17)).random is True


def test_prepared_loader_break_and_errors(prepared, monkeypatch):
    from convnet.data import make_loader
    loader = make_loader(prepared, 2, train=True)
    for b, _ in enumerate(loader):
        if b == 1:
            break
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("loader-") and t.is_alive()]

    loader = make_loader(prepared, 2, train=True)
    real = loader.read

    def failing(job):
        if job[0] == 3:
            raise OSError("disk gone")
        return real(job)
    monkeypatch.setattr(loader, "read", failing)
    seen = 0
    with pytest.raises(OSError, match="disk gone"):
        for _ in loader:
            seen += 1
    assert seen == 3
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("loader-") and t.is_alive()]


@pytest.mark.gpu
def test_cuda_loader_matches_numpy(prepared):
    import cupy
    from convnet.data import make_loader
    for train in (True, False):
        a = list(make_loader(prepared, 4, train=train, seed=1))
        b = list(make_loader(prepared, 4, train=train, seed=1, device=B.cuda(0)))
        assert len(a) == len(b)
        for (x, y), (gx, gy) in zip(a, b):
            assert isinstance(gx, cupy.ndarray) and gx.dtype == cupy.float32 and gy.dtype == cupy.int32
            assert np.array_equal(x, gx.get()) and np.array_equal(y, gy.get())


def test_benchmark_runs(tmp_path):
    """benchmarks/pipeline_throughput.py end to end on a tiny synthetic set."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "benchmarks", "pipeline_throughput.py")
    spec = importlib.util.spec_from_file_location("pipeline_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.txt"
    assert bench.main(["--images", "12", "--size", "40", "--batch", "4", "--batches", "2",
                       "--workers", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "prepare | 12 synthetic JPEGs" in text and "pipeline numpy |" in text
    assert "batch 4 x 3 x 40 x 40" in text and "images/s" in text
    assert "alexnet train step" in text


def test_shards_are_mapped_lazily_and_few_at_a_time(prepared):
    from convnet.data.format import ShardedImages
    imgs = prepared.images
    small = ShardedImages(imgs.paths, np.diff(imgs.starts), imgs.shape[1:], max_open=2)
    everything = np.asarray(imgs)
    assert len(small.paths) == 5 and not small._open
    idx = np.random.default_rng(0).permutation(len(small))
    assert np.array_equal(small[idx], everything[idx])
    assert len(small._open) <= 2
    assert np.array_equal(small[len(small) - 1], everything[-1]) and np.array_equal(small[2:9:3], everything[2:9:3])
    assert small[4, 1:3, 0].shape == (2, 3)
