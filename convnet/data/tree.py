"""Folder trees of images: <root>/<split>/<class>/<image> (CIFAR-10 as JPEGs or PNGs,
any ImageFolder layout), as folders or inside a .tar(.gz), and archives of other
datasets extracted once into the cache.

A whole tree is decoded at the images' own size (they must share it; mixed
sizes and bad files are for `python -m convnet.prepare`), mixed in a fixed
order and cached as arrays in cache_dir()/decoded. Only regular files are
images: a FIFO, socket or device named like an image is refused (it would
block the reader), never opened.
"""
import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import shutil
import signal
import tarfile
import tempfile
import threading

import numpy as np

from convnet import fsio
from convnet.data.dataset import SPLITS, Dataset, cache_dir, cached_train, load_cache, save_cache
from convnet.data.errors import DataError
from convnet.data.images import ImageError, decode_image, is_image_name

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
        # workers ignore Ctrl-C: the parent's KeyboardInterrupt ends the pool (no worker tracebacks)
        with multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_sigint) as pool:
            return pool.map(_decode_entry, paths, chunksize=256)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(_decode_entry, paths))


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _tree_arrays(split_root):
    """Decode a whole (small) tree at the images' own size; all images must share it."""
    items, classes = list_tree(split_root)
    items = [(p, ci) for p, ci in items if is_image_name(p)]
    for p, _ in items:
        if not fsio.is_regular(p):
            raise DataError(f"{p}: {fsio.kind_of(p)}, not an image file (only regular files are read)")
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
    arrays = load_cache(cache)
    if arrays is None:
        arrays = _tree_arrays(split_dir)
        save_cache(cache, images=arrays[0], labels=arrays[1], classes=np.asarray(arrays[2]))
    images, labels, classes = arrays
    if split != "train":
        train_classes = class_folders(os.path.join(folder, "train"))
        if train_classes != classes:
            raise DataError(f"{split_dir}: class folders differ from the train split's")

    def train():
        return load_split_tree(folder, "train", name)

    name = name or os.path.basename(os.path.normpath(folder))
    return Dataset(name, split, images, labels, classes,
                   train_loader=cached_train(("tree", os.path.abspath(folder)), train), source=folder)


def _split_dir(folder, split):
    names = {"train": ["train"], "test": ["test", "val"], "val": ["val", "test"]}[split]
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isdir(p):
            return p
    raise DataError(f"{folder}: no {' or '.join(names)} folder for split {split!r}")


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
    arrays = load_cache(cache)
    if arrays is None:
        arrays = _archive_arrays(path, split)
        save_cache(cache, images=arrays[0], labels=arrays[1], classes=np.asarray(arrays[2]))
    images, labels, classes = arrays

    def train():
        return load_tree_archive(path, "train", name)

    base = os.path.basename(path).split(".")[0]
    return Dataset(name or base, split, images, labels, classes,
                   train_loader=cached_train(("tree-archive", os.path.abspath(path)), train), source=path)

