"""Dataset readers: Fashion-MNIST / IDX files, CIFAR-10 (folder tree, its
.tar.gz, or the original python batches), image folder trees, and folders
written by `python -m convnet.prepare`.

Every reader returns a Dataset: images uint8 (N, H, W, C) (C = 1 for grey),
labels int32 (N,), classes, and the mean image of the TRAIN split (float32
(H, W, C), computed on first use and cached).
"""
import concurrent.futures
import gzip
import hashlib
import io
import multiprocessing
import os
import pickle
import shutil
import tarfile
import tempfile
import threading

import numpy as np

from convnet.data.errors import DataError
from convnet.data.images import ImageError, decode_image, is_image_name

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where the name "cifar10" looks (first that exists), unless CONVNET_CIFAR10 is set: data/README.md
CIFAR10_DEFAULTS = [os.path.join(REPO_ROOT, "data", "cifar10"),
                    os.path.join(REPO_ROOT, "data", "cifar10-jpg.tar.gz")]
SPLITS = ("train", "test", "val")


def cache_dir():
    """Where extracted archives and decoded arrays are kept (env CONVNET_CACHE)."""
    return os.environ.get("CONVNET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "convnet")


# --------------------------------------------------------------------------
# The dataset object

class Dataset:
    """One split of a dataset.

    images: uint8 (N, H, W, C) -- a NumPy array, or for prepared sets an
            array-like over memory-mapped shards (len, shape, [index]);
    labels: int32 (N,); classes: list of class names; name: str; split: str;
    mean:   float32 (H, W, C), the mean image of the TRAIN split;
    pca:    (eigenvalues (3,), eigenvectors (3, 3) as columns) of the RGB
            covariance of TRAIN pixel values (0..255 units), or None for grey.
    """

    def __init__(self, name, split, images, labels, classes, mean=None, pca=None,
                 train_loader=None, source=None, prepared=False):
        self.name = name
        self.split = split
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.source = source
        self.prepared = prepared
        self._mean = mean
        self._pca = pca
        self._train_loader = train_loader      # () -> Dataset of the train split
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return (f"Dataset({self.name!r}, split={self.split!r}, images={tuple(self.images.shape)}, "
                f"classes={len(self.classes)})")

    @property
    def shape(self):
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])

    def _train(self):
        if self.split == "train" or self._train_loader is None:
            return self
        return self._train_loader()

    @property
    def mean(self):
        with self._lock:
            if self._mean is None:
                train = self._train()
                self._mean = mean_image(train.images) if train is self else train.mean
            return self._mean

    @property
    def pca(self):
        with self._lock:
            if self._pca is None and self.images.shape[-1] == 3:
                train = self._train()
                self._pca = rgb_pca(train.images) if train is self else train.pca
            return self._pca


def mean_image(images, chunk=4096):
    """float32 (H, W, C) mean over the first axis, summed in float64."""
    total = np.zeros(images.shape[1:], np.float64)
    for i in range(0, len(images), chunk):
        total += np.asarray(images[i:i + chunk]).sum(axis=0, dtype=np.float64)
    return (total / max(len(images), 1)).astype(np.float32)


def rgb_moments(images, chunk=2048):
    """(count, sum (3,), sum of outer products (3, 3)) of RGB pixel values, float64."""
    s = np.zeros(3, np.float64)
    ss = np.zeros((3, 3), np.float64)
    count = 0
    for i in range(0, len(images), chunk):
        x = np.asarray(images[i:i + chunk]).reshape(-1, 3).astype(np.float64)
        s += x.sum(axis=0)
        ss += x.T @ x
        count += x.shape[0]
    return count, s, ss


def pca_from_moments(count, s, ss):
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance."""
    if count < 2:
        raise DataError("PCA needs at least two pixels")
    m = s / count
    cov = ss / count - np.outer(m, m)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return np.maximum(vals[order], 0.0).astype(np.float32), vecs[:, order].astype(np.float32)


def rgb_pca(images):
    return pca_from_moments(*rgb_moments(images))


# --------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (gzip or not) -> NumPy array. DataError on bad magic or truncation."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) < need:
        raise DataError(f"{path}: truncated IDX data ({len(raw)} bytes, the header {dims} needs {need})")
    if len(raw) > need:
        raise DataError(f"{path}: {len(raw) - need} bytes after the IDX data of shape {dims}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _idx_file(folder, split, kind):
    stems = ["train"] if split == "train" else ["t10k", "test"]
    for stem in stems:
        for name in (f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte",):
            for ext in (".gz", ""):
                p = os.path.join(folder, name + ext)
                if os.path.exists(p):
                    return p
    want = f"{stems[0]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz]"
    raise DataError(f"{folder}: no {want} for split {split!r}")


def is_idx_folder(folder):
    return any("-idx" in n and "-ubyte" in n for n in os.listdir(folder))


def load_idx_folder(folder, split, name=None):
    images = read_idx(_idx_file(folder, split, "images"))
    labels_path = _idx_file(folder, split, "labels")
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{_idx_file(folder, split, 'images')}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels (N,), got shape {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    fashion = name == "fashion-mnist" or "fashion" in os.path.abspath(folder).lower()
    if fashion:
        classes = FASHION_CLASSES
    else:
        train_labels = labels if split == "train" else read_idx(_idx_file(folder, "train", "labels"))
        classes = [str(i) for i in range(max(int(train_labels.max(initial=0)) + 1, 2))]
    _check_labels(labels, len(classes), labels_path)

    def train():
        return load_idx_folder(folder, "train", name)

    return Dataset(name or os.path.basename(os.path.normpath(folder)), split,
                   np.ascontiguousarray(images[..., None]), labels.astype(np.int32), classes,
                   train_loader=_cached(("idx", os.path.abspath(folder)), train), source=folder)


def _check_labels(labels, n_classes, path):
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise DataError(f"{path}: label {int(bad[0])} out of range for {n_classes} classes")


_TRAIN_CACHE = {}
_TRAIN_LOCK = threading.Lock()


def _cached(key, load):
    """A loader of the train split that loads it at most once per process."""
    def get():
        with _TRAIN_LOCK:
            if key not in _TRAIN_CACHE:
                _TRAIN_CACHE[key] = load()
            return _TRAIN_CACHE[key]
    return get


# --------------------------------------------------------------------------
# CIFAR-10, original python batches

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches hold dicts, lists, bytes and NumPy arrays; refuse anything else."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a readable CIFAR batch ({e})") from None


def is_cifar_batches(folder):
    return os.path.exists(os.path.join(folder, "data_batch_1"))


def load_cifar_batches(folder, split):
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    meta = _unpickle(os.path.join(folder, "batches.meta"))
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names:
        raise DataError(f"{os.path.join(folder, 'batches.meta')}: no label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    images, labels = [], []
    for fn in files:
        path = os.path.join(folder, fn)
        if not os.path.exists(path):
            raise DataError(f"{path}: missing CIFAR batch")
        d = _unpickle(path)
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise DataError(f"{path}: not a CIFAR batch (no data/labels)")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        lab = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {len(lab)}")
        _check_labels(lab, len(classes), path)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)

    def train():
        return load_cifar_batches(folder, "train")

    return Dataset("cifar10", split, np.ascontiguousarray(np.concatenate(images)),
                   np.concatenate(labels).astype(np.int32), classes,
                   train_loader=_cached(("cifar-batches", os.path.abspath(folder)), train), source=folder)


# --------------------------------------------------------------------------
# Folder trees: <root>/<split>/<class>/<image>

def class_folders(root):
    """Sorted subfolder names of root (hidden ones skipped)."""
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{root}: cannot list ({e.strerror or e})") from None


def list_tree(root):
    """[(path, class index)] of the image-named files of a class-per-folder tree, and the classes."""
    classes = class_folders(root)
    if not classes:
        raise DataError(f"{root}: no class folders (expected one subfolder per class)")
    items = []
    for ci, c in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, c), followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
        if not found:
            raise DataError(f"{os.path.join(root, c)}: empty class folder")
        items += [(p, ci) for p in found]
    return items, classes


def is_split_tree(folder):
    return os.path.isdir(os.path.join(folder, "train"))


def _decode_entry(path):
    """(array, None) or (None, reason): picklable for a process pool. path
    may be bytes (a file's content, from an archive)."""
    try:
        return decode_image(io.BytesIO(path) if isinstance(path, bytes) else path), None
    except ImageError as e:
        return None, str(e)


def _decode_all(paths):
    """Decode many small images: a fork Pool when this process runs no other
    thread (forking a threaded process is unsafe), else threads (Pillow
    releases the GIL while decoding)."""
    workers = min(os.cpu_count() or 1, 8)
    if len(paths) < 1000 or workers < 2:
        return [_decode_entry(p) for p in paths]
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_decode_entry, paths, chunksize=256)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(_decode_entry, paths))


def _tree_arrays(split_root):
    """Decode a whole (small) tree at the images' own size; all images must share it."""
    items, classes = list_tree(split_root)
    items = [(p, ci) for p, ci in items if is_image_name(p)]
    images, labels, shape = [], [], None
    for (path, ci), (a, reason) in zip(items, _decode_all([p for p, _ in items])):
        if a is None:
            raise DataError(f"{path}: {reason} (use python -m convnet.prepare to skip bad files)")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise DataError(f"{path}: size {a.shape[1]}x{a.shape[0]} differs from {shape[1]}x{shape[0]}; "
                            "prepare mixed sizes with python -m convnet.prepare")
        images.append(a)
        labels.append(ci)
    if not images:
        raise DataError(f"{split_root}: no images")
    return _mixed(np.stack(images), np.asarray(labels, np.int32)) + (classes,)


CACHE_VERSION = 2        # bump when the decoded arrays change (2: fixed mixed order)


def _mixed(images, labels):
    """A folder tree lists its images class by class; a fixed permutation (seed 0)
    mixes them, so that any prefix (a --train-limit subset) holds every class."""
    perm = np.random.default_rng(0).permutation(len(labels))
    return images[perm], labels[perm]


def _tree_cache_key(split_root):
    """Hashes the folder, its class folders' mtimes (adding or removing a file
    changes its folder's mtime) and the cache version."""
    stamps = [f"{os.path.abspath(split_root)}|{os.stat(split_root).st_mtime_ns}|{CACHE_VERSION}"]
    for e in sorted(os.scandir(split_root), key=lambda e: e.name):
        if e.is_dir():
            stamps.append(f"{e.name}|{e.stat().st_mtime_ns}")
    h = hashlib.sha1("\n".join(stamps).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "decoded", h + ".npz")


def load_split_tree(folder, split, name=None):
    split_dir = _split_dir(folder, split)
    cache = _tree_cache_key(split_dir)
    arrays = None
    if os.path.exists(cache):
        try:
            with np.load(cache) as z:
                arrays = z["images"], z["labels"], [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError):
            arrays = None
    if arrays is None:
        arrays = _tree_arrays(split_dir)
        _atomic_savez(cache, images=arrays[0], labels=arrays[1], classes=np.asarray(arrays[2]))
    images, labels, classes = arrays
    if split != "train":
        train_classes = class_folders(os.path.join(folder, "train"))
        if train_classes != classes:
            raise DataError(f"{split_dir}: class folders differ from the train split's")

    def train():
        return load_split_tree(folder, "train", name)

    name = name or os.path.basename(os.path.normpath(folder))
    return Dataset(name, split, images, labels, classes,
                   train_loader=_cached(("tree", os.path.abspath(folder)), train), source=folder)


def _split_dir(folder, split):
    names = {"train": ["train"], "test": ["test", "val"], "val": ["val", "test"]}[split]
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isdir(p):
            return p
    raise DataError(f"{folder}: no {' or '.join(names)} folder for split {split!r}")


def _atomic_savez(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------
# Archives: extracted once into the cache

def extract_archive(path):
    """Extract a .tar(.gz) once into cache_dir()/extracted/<name>-<key>; returns that folder."""
    st = os.stat(path)
    base = os.path.basename(path)
    for ext in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = os.path.join(cache_dir(), "extracted", f"{base}-{key}")
    if os.path.isdir(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{base}-")
    try:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{path}: cannot extract ({e})") from None
    try:
        os.rename(tmp, out)
    except OSError:                      # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------
# Archives of folder trees: decoded straight from the archive

def _archive_key(path):
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{CACHE_VERSION}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _tree_member(name):
    """(split, class, file) of an archive member <...>/<split>/<class>/<file>, else None."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) >= 3 and parts[-3] in SPLITS and not any(p.startswith(".") for p in parts[-3:]):
        return parts[-3], parts[-2], parts[-1]
    return None


def is_tree_archive(path):
    """True when the archive holds train/<class>/<file> members (reads its member list)."""
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile():
                    t = _tree_member(m.name)
                    if t is not None and t[0] == "train":
                        return True
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable archive ({e})") from None
    return False


def _archive_arrays(path, split):
    """One pass over the archive: the class names of its train split, and the
    decoded images of `split` (test/val aliases resolved), sorted by class and name."""
    wanted = {"train": ["train"], "test": ["test", "val"], "val": ["val", "test"]}[split]
    classes = {s: set() for s in SPLITS}
    data = {s: [] for s in wanted}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                t = _tree_member(m.name) if m.isfile() else None
                if t is None:
                    continue
                classes[t[0]].add(t[1])
                if t[0] in data and is_image_name(t[2]):
                    data[t[0]].append((t[1], m.name, tar.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable archive ({e})") from None
    train_classes = sorted(classes["train"])
    have = [s for s in wanted if classes[s]]
    if not have:
        raise DataError(f"{path}: no {' or '.join(wanted)}/<class>/ images in the archive")
    if sorted(classes[have[0]]) != train_classes:
        raise DataError(f"{path}: the {have[0]} class folders differ from the train split's")
    index = {c: i for i, c in enumerate(train_classes)}
    items = sorted(data[have[0]], key=lambda t: (index[t[0]], t[1]))
    images, shape = [], None
    for (c, name, _), (a, reason) in zip(items, _decode_all([b for _, _, b in items])):
        if a is None:
            raise DataError(f"{path}: {name}: {reason} (use python -m convnet.prepare to skip bad files)")
        if shape is not None and a.shape != shape:
            raise DataError(f"{path}: {name}: size {a.shape[1]}x{a.shape[0]} differs from "
                            f"{shape[1]}x{shape[0]}; prepare mixed sizes with python -m convnet.prepare")
        shape = a.shape
        images.append(a)
    labels = np.array([index[c] for c, _, _ in items], np.int32)
    return _mixed(np.stack(images), labels) + (train_classes,)


def load_tree_archive(path, split, name=None):
    """A .tar(.gz) of train/<class>/... (and test/ or val/): decoded once, cached as arrays."""
    cache = os.path.join(cache_dir(), "decoded", f"{_archive_key(path)}-{split}.npz")
    arrays = None
    if os.path.exists(cache):
        try:
            with np.load(cache) as z:
                arrays = z["images"], z["labels"], [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError):
            arrays = None
    if arrays is None:
        arrays = _archive_arrays(path, split)
        _atomic_savez(cache, images=arrays[0], labels=arrays[1], classes=np.asarray(arrays[2]))
    images, labels, classes = arrays

    def train():
        return load_tree_archive(path, "train", name)

    base = os.path.basename(path).split(".")[0]
    return Dataset(name or base, split, images, labels, classes,
                   train_loader=_cached(("tree-archive", os.path.abspath(path)), train), source=path)


# --------------------------------------------------------------------------
# Dispatch

def resolve_source(source):
    """A source name or path -> (kind, folder, name)."""
    name = None
    if source == "fashion-mnist":
        folder = os.environ.get("CONVNET_FASHION_MNIST") or FASHION_MNIST_DIR
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: Fashion-MNIST not found (sudo apt-get install dataset-fashion-mnist, "
                            "or set CONVNET_FASHION_MNIST to a folder of its IDX files)")
        return "idx", folder, "fashion-mnist"
    if source in ("cifar10", "cifar-10"):
        path = os.environ.get("CONVNET_CIFAR10") or next(
            (p for p in CIFAR10_DEFAULTS if os.path.exists(p)), CIFAR10_DEFAULTS[0])
        if not os.path.exists(path):
            raise DataError(f"{path}: CIFAR-10 not found (put it in data/cifar10 or data/cifar10-jpg.tar.gz, "
                            "or set CONVNET_CIFAR10 to its folder or .tar.gz)")
        source, name = path, "cifar10"
    source = os.fspath(source)
    if not os.path.exists(source):
        raise DataError(f"{source}: no such file or folder (and not a known dataset name: fashion-mnist, cifar10)")
    if os.path.isfile(source):
        if tarfile.is_tarfile(source):
            if is_tree_archive(source):
                if name is None and "cifar" in os.path.basename(source).lower():
                    name = "cifar10"
                return "tree-archive", source, name
            source = extract_archive(source)
        else:
            raise DataError(f"{source}: not a dataset folder or a .tar(.gz) archive")
    folder = source
    for _ in range(3):                   # archives often wrap everything in one top folder
        kind = _folder_kind(folder)
        if kind:
            if name is None and kind == "tree" and "cifar" in os.path.basename(os.path.normpath(source)).lower():
                name = "cifar10"
            return kind, folder, name
        subs = [e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
        if len(subs) != 1:
            break
        folder = subs[0]
    raise DataError(f"{source}: not a dataset folder (no convnet meta.json, IDX files, CIFAR batches "
                    "or train/<class>/ tree)")


def _folder_kind(folder):
    from convnet.data import format as fmt
    if os.path.exists(os.path.join(folder, fmt.META)):
        return "prepared"
    if is_cifar_batches(folder):
        return "cifar-batches"
    if is_split_tree(folder):
        return "tree"
    if is_idx_folder(folder):
        return "idx"
    return None


def load_dataset(source="fashion-mnist", split="train"):
    """Load one split of a dataset (see the module docstring for the sources)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    kind, folder, name = resolve_source(source)
    if kind == "idx":
        return load_idx_folder(folder, "train" if split == "train" else "test", name)
    if kind == "cifar-batches":
        return load_cifar_batches(folder, "train" if split == "train" else "test")
    if kind == "tree":
        return load_split_tree(folder, split, name)
    if kind == "tree-archive":
        return load_tree_archive(folder, split, name)
    from convnet.data import format as fmt
    return fmt.load_prepared(folder, split)
