"""The dataset object every reader returns, and what it computes from its images.

Dataset: images uint8 (N, H, W, C) (C = 1 for grey), labels int32 (N,),
classes, and the mean image and RGB PCA of the TRAIN split (float32,
computed on first use and cached). Also: the reader's cache folder, the
per-process cache of train splits, and the label check every reader runs.
"""
import os
import threading

import numpy as np

from convnet import fsio
from convnet.data.errors import DataError

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


def check_labels(labels, n_classes, path):
    """DataError naming the first label outside 0..n_classes-1 (checked before any use)."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise DataError(f"{path}: label {int(bad[0])} out of range for {n_classes} classes")


_TRAIN_CACHE = {}
_TRAIN_LOCK = threading.Lock()


def cached_train(key, load):
    """A loader of the train split that loads it at most once per process."""
    def get():
        with _TRAIN_LOCK:
            if key not in _TRAIN_CACHE:
                _TRAIN_CACHE[key] = load()
            return _TRAIN_CACHE[key]
    return get


def save_cache(path, **arrays):
    """Write decoded arrays to the cache (atomically); a failure only means no cache."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fsio.write_atomic(path, write=lambda f: np.savez(f, **arrays))
    except OSError:
        pass


def load_cache(path):
    """(images, labels, classes) from a cache file, or None (missing, unreadable, foreign)."""
    if not fsio.is_regular(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"], [str(c) for c in z["classes"]]
    except (OSError, ValueError, KeyError):
        return None
