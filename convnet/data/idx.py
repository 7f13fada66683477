"""IDX files (MNIST, Fashion-MNIST): a folder holding train-/t10k- images and labels,
gzipped or not.

An IDX file with no images, labels past 2^16 classes, a label count that
differs from the image count, or a file that is not a regular file is refused
with one DataError line; labels are checked before anything is sized by them.
"""
import gzip
import math
import os

import numpy as np

from convnet import fsio
from convnet.data.dataset import Dataset, cached_train, check_labels
from convnet.data.errors import DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MAX_CLASSES = 1 << 16            # an IDX label above this is damage, not a class

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (gzip or not) -> NumPy array. DataError on bad magic or truncation."""
    try:
        raw = fsio.read_regular(path)
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
    need = header + math.prod(dims) * dtype.itemsize          # exact: no int64 wrap-around
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
    if len(images) == 0:
        raise DataError(f"{_idx_file(folder, split, 'images')}: holds no images")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: labels must be integers, got {labels.dtype}")
    fashion = name == "fashion-mnist" or "fashion" in os.path.abspath(folder).lower()
    if fashion:
        classes = FASHION_CLASSES
    else:
        train_labels = labels if split == "train" else read_idx(_idx_file(folder, "train", "labels"))
        check_labels(train_labels, MAX_CLASSES, labels_path if split == "train" else
                     _idx_file(folder, "train", "labels"))
        classes = [str(i) for i in range(max(int(train_labels.max(initial=0)) + 1, 2))]
    check_labels(labels, len(classes), labels_path)

    def train():
        return load_idx_folder(folder, "train", name)

    return Dataset(name or os.path.basename(os.path.normpath(folder)), split,
                   np.ascontiguousarray(images[..., None]), labels.astype(np.int32), classes,
                   train_loader=cached_train(("idx", os.path.abspath(folder)), train), source=folder)


