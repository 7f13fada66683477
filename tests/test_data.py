"""Dataset readers (IDX, CIFAR-10 batches / tree / tar.gz, real Fashion-MNIST
and CIFAR-10 when present), make_loader (order, normalisation, augmentation,
speed) and the ten-crop views."""
import gzip
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from convnet.data import Augment, DataError, eval_views, load_dataset, make_loader
from convnet.data import readers
from convnet.data.images import ImageError, decode_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.environ.get("CONVNET_FASHION_MNIST") or readers.FASHION_MNIST_DIR
CIFAR_TAR = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Archives extracted and trees decoded under the test's folder, not ~/.cache."""
    if os.environ.get("CONVNET_CACHE") is None:
        monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "cache"))


# --- IDX ---------------------------------------------------------------------

def idx_bytes(a):
    a = np.asarray(a, np.uint8)
    return bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write_idx_set(folder, n_train=7, n_test=3, h=5, w=4, gz=True, n_classes=3):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        labs = (np.arange(n) % n_classes).astype(np.uint8)
        arrays[stem] = imgs, labs
        for kind, a in (("images-idx3", imgs), ("labels-idx1", labs)):
            data = idx_bytes(a)
            name = os.path.join(folder, f"{stem}-{kind}-ubyte")
            if gz:
                with gzip.open(name + ".gz", "wb") as f:
                    f.write(data)
            else:
                open(name, "wb").write(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    arrays = write_idx_set(tmp_path / "digits", gz=gz)
    tr = load_dataset(str(tmp_path / "digits"), "train")
    te = load_dataset(str(tmp_path / "digits"), "test")
    assert tr.images.shape == (7, 5, 4, 1) and tr.images.dtype == np.uint8
    assert np.array_equal(tr.images[..., 0], arrays["train"][0])
    assert np.array_equal(te.labels, arrays["t10k"][1]) and te.labels.dtype == np.int32
    assert tr.classes == ["0", "1", "2"]
    np.testing.assert_allclose(te.mean[..., 0], arrays["train"][0].mean(axis=0), rtol=1e-6)
    assert te.mean.dtype == np.float32


def test_idx_errors(tmp_path):
    folder = tmp_path / "fashion-bad"
    write_idx_set(folder, gz=False, n_classes=3)
    path = folder / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x00\x00\x08\x07" + good[4:])
    with pytest.raises(DataError, match=f"{path}: not an IDX file"):
        load_dataset(str(folder))
    path.write_bytes(good[:-5])
    with pytest.raises(DataError, match="truncated IDX data"):
        load_dataset(str(folder))
    path.write_bytes(good)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes([0, 1, 12, 3, 4, 5, 6]))       # "fashion" in the path: 10 classes
    with pytest.raises(DataError, match="label 12 out of range for 10 classes"):
        load_dataset(str(folder))
    labels.write_bytes(idx_bytes([0, 1, 2]))
    with pytest.raises(DataError, match="3 labels for 7 images"):
        load_dataset(str(folder))
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="corrupt gzip"):
        load_dataset(str(folder), "test")


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="split 'dev'"):
        load_dataset(str(tmp_path), "dev")
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    with pytest.raises(DataError, match="not a dataset folder"):
        load_dataset(str(tmp_path))
    (tmp_path / "file.bin").write_bytes(b"abc")
    with pytest.raises(DataError, match="not a dataset folder or a .tar"):
        load_dataset(str(tmp_path / "file.bin"))
    assert issubclass(DataError, ValueError)


# --- CIFAR ---------------------------------------------------------------------

def test_cifar_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"class{i}".encode() for i in range(10)]
    pickle.dump({b"label_names": names}, open(folder / "batches.meta", "wb"))
    chw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
        chw[name] = x
        pickle.dump({b"data": x.reshape(4, -1), b"labels": list(rng.integers(0, 10, 4))},
                    open(folder / name, "wb"))
    tr = load_dataset(str(tmp_path), "train")                  # found one folder down
    assert tr.images.shape == (20, 32, 32, 3) and tr.classes[3] == "class3"
    assert np.array_equal(tr.images[4], chw["data_batch_2"][0].transpose(1, 2, 0))   # CHW rows -> HWC
    te = load_dataset(str(folder), "val")
    assert len(te) == 4 and np.array_equal(te.mean, tr.mean)
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(folder, arcname="cifar-10-batches-py")
    from_tar = load_dataset(str(tar), "train")                  # extracted once into the cache
    assert np.array_equal(from_tar.images, tr.images) and from_tar.classes == tr.classes
    assert len(os.listdir(os.path.join(os.environ["CONVNET_CACHE"], "extracted"))) == 1
    pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, open(folder / "test_batch", "wb"))
    with pytest.raises(DataError, match="label 10 out of range"):
        load_dataset(str(folder), "test")


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_cifar_batches_refuse_arbitrary_pickles(tmp_path):
    pickle.dump({b"label_names": [Evil()]}, open(tmp_path / "batches.meta", "wb"))
    pickle.dump({}, open(tmp_path / "data_batch_1", "wb"))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset(str(tmp_path))


def make_png_tree(root, sizes=(6, 2), classes=("cat", "dog"), shape=(8, 8)):
    rng = np.random.default_rng(2)
    want = {}
    for split, n in zip(("train", "test"), sizes):
        for c in classes:
            os.makedirs(os.path.join(root, split, c))
            for i in range(n):
                a = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
                Image.fromarray(a).save(os.path.join(root, split, c, f"{i:02d}.png"))
                want.setdefault(split, []).append(a)
    return want


def test_cifar_style_tar_gz(tmp_path):
    want = make_png_tree(tmp_path / "tree")
    tar = tmp_path / "little-cifar.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(tmp_path / "tree" / "train", arcname="train")
        t.add(tmp_path / "tree" / "test", arcname="test")
    tr = load_dataset(str(tar), "train")
    assert tr.images.shape == (12, 8, 8, 3) and tr.classes == ["cat", "dog"]
    perm = np.random.default_rng(0).permutation(12)              # class-sorted files, mixed
    assert np.array_equal(tr.images, np.stack(want["train"])[perm])   # lossless PNG
    assert np.array_equal(tr.labels, np.array([0] * 6 + [1] * 6)[perm])
    assert set(tr.labels[:4]) == {0, 1}
    te = load_dataset(str(tar), "test")
    assert len(te) == 4 and np.array_equal(te.mean, tr.mean)
    cache = os.environ["CONVNET_CACHE"]
    assert not os.path.exists(os.path.join(cache, "extracted"))  # decoded from the archive itself
    assert len(os.listdir(os.path.join(cache, "decoded"))) == 2  # one array file per split
    os.rename(tar, tmp_path / "moved.tar.gz")
    os.rename(tmp_path / "moved.tar.gz", tar)                    # same path, size and mtime: cache hit
    again = load_dataset(str(tar), "train")
    assert np.array_equal(again.images, tr.images)
    assert len(os.listdir(os.path.join(cache, "decoded"))) == 2


def test_tree_with_mixed_sizes_is_refused(tmp_path):
    make_png_tree(tmp_path, sizes=(1, 1))
    Image.new("RGB", (9, 8)).save(tmp_path / "train" / "dog" / "big.png")
    with pytest.raises(DataError, match="differs from 8x8"):
        load_dataset(str(tmp_path))


def test_decode_limits(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="decompression bomb: 40x30"):
        decode_image(str(tmp_path / "a.png"), max_pixels=1000)
    with pytest.raises(ImageError, match="too small: 40x30"):
        decode_image(str(tmp_path / "a.png"), min_side=31)
    assert decode_image(str(tmp_path / "a.png"), size=16).shape == (16, 16, 3)


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist():
    tr, te = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert tr.images.shape == (60000, 28, 28, 1) and te.images.shape == (10000, 28, 28, 1)
    assert np.bincount(tr.labels).tolist() == [6000] * 10
    assert tr.classes[0] == "T-shirt/top" and tr.classes[9] == "Ankle boot"
    assert 70 < tr.mean.mean() < 76 and te.mean is not None and np.array_equal(te.mean, tr.mean)


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")
def test_fashion_mnist_epoch_of_batches_holds_every_image_once():
    """A whole training epoch of batches: 469 batches, every image once (the class counts of
    the split); its time is printed, not asserted."""
    tr = load_dataset("fashion-mnist", "train")
    loader = make_loader(tr, 128, train=True, seed=0, epoch=1)
    t = time.perf_counter()
    labels = np.concatenate([np.asarray(y) for _, y in loader])
    elapsed = time.perf_counter() - t
    assert len(labels) == 60000 and len(loader) == 469
    assert np.bincount(labels, minlength=10).tolist() == np.bincount(tr.labels, minlength=10).tolist()
    print(f"\none Fashion-MNIST epoch of batches: {elapsed:.2f} s")   # read, not asserted


@pytest.mark.skipif(not os.path.exists(CIFAR_TAR), reason="CIFAR-10 archive not present")
def test_real_cifar10_test_split(monkeypatch):
    monkeypatch.delenv("CONVNET_CACHE")                          # share the one-time extraction
    te = load_dataset(CIFAR_TAR, "test")
    assert te.name == "cifar10" and te.images.shape == (10000, 32, 32, 3)
    assert np.bincount(te.labels).tolist() == [1000] * 10
    assert te.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    means = te.images.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(means, [125.3, 122.9, 113.9], atol=3)   # data/README.md (train split)


# --- make_loader -------------------------------------------------------------------

def indexed_set(n=37, h=6, c=1):
    """Image i is filled with i % 256 (so a batch tells which images it holds)."""
    images = np.repeat((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], h * h * c, axis=1)
    images = images.reshape(n, h, h, c)
    return readers.Dataset("toy", "train", images, (np.arange(n) % 3).astype(np.int32), ["a", "b", "c"])


def ids(x, mean):
    return np.rint(x[:, 0, 0, 0] * 255 + mean[0, 0, 0]).astype(int)


def test_loader_order_and_counts():
    ds = indexed_set()
    test = make_loader(ds, 10, train=False)
    got = [(x, y) for x, y in test]
    assert len(test) == 4 and [len(y) for _, y in got] == [10, 10, 10, 7]
    assert np.concatenate([ids(x, ds.mean) for x, _ in got]).tolist() == list(range(37))
    e0 = np.concatenate([ids(x, ds.mean) for x, _ in make_loader(ds, 10, train=True, seed=1, epoch=0)])
    e0b = np.concatenate([ids(x, ds.mean) for x, _ in make_loader(ds, 10, train=True, seed=1, epoch=0)])
    e1 = np.concatenate([ids(x, ds.mean) for x, _ in make_loader(ds, 10, train=True, seed=1, epoch=1)])
    s2 = np.concatenate([ids(x, ds.mean) for x, _ in make_loader(ds, 10, train=True, seed=2, epoch=0)])
    assert sorted(e0) == list(range(37)) and np.array_equal(e0, e0b)
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, s2)
    drop = make_loader(ds, 10, train=True, drop_last=True)
    assert len(drop) == 3 and [len(y) for _, y in drop] == [10, 10, 10]
    for x, y in make_loader(ds, 8, train=True, seed=4):
        assert np.array_equal(y, ids(x, ds.mean) % 3)              # labels travel with images


def test_loader_normalisation():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (9, 7, 7, 3), dtype=np.uint8)
    ds = readers.Dataset("toy", "train", images, np.zeros(9, np.int32), ["a"])
    (x, y), = list(make_loader(ds, 9, train=False))
    want = ((images.astype(np.float64) - images.mean(axis=0)) / 255).transpose(0, 3, 1, 2)
    assert x.dtype == np.float32 and x.shape == (9, 3, 7, 7) and y.dtype == np.int32
    np.testing.assert_allclose(x, want, atol=1e-6)


def test_loader_augmentation_on_memory_sets():
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (12, 10, 10, 3), dtype=np.uint8)
    ds = readers.Dataset("toy", "train", images, np.zeros(12, np.int32), ["a"])
    spec = Augment(crop=8)
    a = [x for x, _ in make_loader(ds, 5, train=True, seed=1, augment=spec)]
    b = [x for x, _ in make_loader(ds, 5, train=True, seed=1, augment=spec)]
    assert a[0].shape == (5, 3, 8, 8) and all(np.array_equal(p, q) for p, q in zip(a, b))
    c = [x for x, _ in make_loader(ds, 5, train=False, augment=spec)]       # centre crops
    want = ((images[:5, 1:9, 1:9].astype(np.float64) - ds.mean[1:9, 1:9]) / 255).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(c[0], want, atol=1e-6)
    plain = make_loader(ds, 5, train=True)
    assert plain.shape == (3, 10, 10) and not plain.random


def test_loader_bad_arguments():
    ds = indexed_set()
    for bs in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="batch_size"):
            make_loader(ds, bs, train=True)
    with pytest.raises(DataError, match="device 'gpu'"):
        make_loader(ds, 4, train=True, device="gpu")
    with pytest.raises(DataError, match="augment"):
        make_loader(ds, 4, train=True, augment="yes")


# --- ten-crop views ----------------------------------------------------------------

def test_ten_views():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 9, 9, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (9, 9, 3)).astype(np.float32)
    v = eval_views(images, 6, "ten", mean)
    assert v.shape == (10, 3, 3, 6, 6) and v.dtype == np.float32
    norm = ((images.astype(np.float64) - mean) / 255).transpose(0, 3, 1, 2)
    corners = [(0, 0), (0, 3), (3, 0), (3, 3), (1, 1)]
    for k, (oy, ox) in enumerate(corners):
        crop = norm[:, :, oy:oy + 6, ox:ox + 6]
        np.testing.assert_allclose(v[k], crop, atol=1e-6)
        np.testing.assert_allclose(v[k + 5], crop[..., ::-1], atol=1e-6)
    c = eval_views(images, 6, "center", mean)
    assert c.shape == (1, 3, 3, 6, 6) and np.array_equal(c[0], v[4])
    with pytest.raises(DataError, match="mode 'five'"):
        eval_views(images, 6, "five", mean)
    with pytest.raises(DataError, match="crop 10"):
        eval_views(images, 10, "ten", mean)
    with pytest.raises(DataError, match="mean"):
        eval_views(images, 6, "ten", None)


def test_loader_non_square_images():
    ds = readers.Dataset("wide", "train", np.zeros((5, 4, 6, 1), np.uint8), np.zeros(5, np.int32), ["a"])
    loader = make_loader(ds, 2, train=True)
    assert loader.shape == (1, 4, 6) and [x.shape for x, _ in loader][-1] == (1, 1, 4, 6)
    with pytest.raises(DataError, match="square"):
        make_loader(ds, 2, train=True, augment=True)


def test_tree_cache_sees_new_images(tmp_path):
    make_png_tree(tmp_path / "t", sizes=(2, 1))
    assert len(load_dataset(str(tmp_path / "t"))) == 4
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "train" / "cat" / "new.png")
    assert len(load_dataset(str(tmp_path / "t"))) == 5


def test_the_readers_import_no_circle():
    """convnet/data's modules import each other (at module level or inside functions) along
    a graph with no cycle: one module per format, the dispatcher on top."""
    import ast
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "convnet", "data")
    names = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
    graph = {}
    for n in names:
        tree = ast.parse(open(os.path.join(folder, n + ".py")).read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("convnet.data."):
                    deps.add(node.module.split(".")[2])
                elif node.module == "convnet.data":
                    deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("convnet.data.")}
        graph[n] = deps & names - {n}
    assert {"idx", "cifar", "tree", "prepared", "readers", "dataset", "format"} <= names
    state = {}

    def visit(n, path):
        if state.get(n) == "open":
            pytest.fail("import circle: " + " -> ".join(path + [n]))
        if state.get(n) == "done":
            return
        state[n] = "open"
        for d in sorted(graph[n]):
            visit(d, path + [n])
        state[n] = "done"
    for n in sorted(names):
        visit(n, [])
    assert not any("readers" in graph[n] for n in names)      # only the package imports the dispatcher
