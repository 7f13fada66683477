"""The prepared-dataset format (version 1), read side. docs/data-format.md
is the full description; `convnet.prepare` writes it.

    OUT/meta.json                  format, version, size, classes, splits and
                                   their shards, PCA; written last
    OUT/mean.npy                   float32 (size, size, 3) mean of the train images
    OUT/<split>-NNNNN.npy          uint8 (n, size, size, 3) images of one shard
    OUT/<split>-NNNNN-labels.npy   int32 (n,)
    OUT/<split>-NNNNN.done         JSON marker: the shard is complete
    OUT/report.json, report.txt    skipped files and why
"""
import collections
import json
import os
import threading

import numpy as np

from convnet.data.errors import DataError

FORMAT = "convnet-prepared"
VERSION = 1
META = "meta.json"
MEAN = "mean.npy"


def shard_names(split, index):
    stem = f"{split}-{index:05d}"
    return stem + ".npy", stem + "-labels.npy", stem + ".done"


class ShardedImages:
    """uint8 (N, S, S, 3) over memory-mapped shard files, indexed like an array.

    images[i] -> (S, S, 3); images[a:b], images[index_array] -> (n, S, S, 3)
    (copies, gathered shard by shard); np.asarray(images) reads everything.
    At most `max_open` shards are mapped at a time (least recently used
    closed first): every map holds a file descriptor, and ImageNet has more
    shards than the usual limit of 1024 descriptors.
    """

    def __init__(self, paths, counts, item_shape, max_open=128):
        self.paths = list(paths)
        self.starts = np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))]).astype(np.int64)
        self.shape = (int(self.starts[-1]),) + tuple(item_shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4
        self.max_open = max_open
        self._open = collections.OrderedDict()
        self._lock = threading.Lock()

    def shard(self, s):
        """The memory map of shard s."""
        with self._lock:
            a = self._open.get(s)
            if a is not None:
                self._open.move_to_end(s)
                return a
        try:
            a = np.load(self.paths[s], mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{self.paths[s]}: unreadable shard ({e})") from None
        with self._lock:
            self._open[s] = a
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        return a

    def __len__(self):
        return self.shape[0]

    def _gather(self, idx):
        idx = np.asarray(idx, np.int64)
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} images")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx),) + self.shape[1:], np.uint8)
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            local = idx[sel] - self.starts[s]
            order = np.argsort(local, kind="stable")        # read each shard front to back
            out[sel[order]] = self.shard(int(s))[local[order]]
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} images")
            s = int(np.searchsorted(self.starts, i, side="right") - 1)
            return np.asarray(self.shard(s)[i - self.starts[s]])
        if isinstance(key, slice):
            return self._gather(np.arange(*key.indices(self.shape[0])))
        if isinstance(key, tuple):
            first = self[key[0]]
            return first[key[1:]] if isinstance(key[0], (int, np.integer)) else first[(slice(None),) + key[1:]]
        return self._gather(key)

    def __array__(self, dtype=None, copy=None):
        a = self._gather(np.arange(self.shape[0]))
        return a if dtype is None else a.astype(dtype)


def read_meta(folder):
    path = os.path.join(folder, META)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} meta file")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: format version {meta.get('version')}, this code reads version {VERSION}")
    return meta


def _split_name(meta, split, path):
    splits = meta["splits"]
    if split in splits:
        return split
    alias = {"test": "val", "val": "test"}.get(split)
    if alias in splits:
        return alias
    raise DataError(f"{path}: no {split!r} split (has {', '.join(sorted(splits))})")


def load_prepared(folder, split):
    from convnet.data.readers import Dataset
    meta = read_meta(folder)
    split = _split_name(meta, split, folder)
    paths, counts, labels = [], [], []
    for sh in meta["splits"][split]["shards"]:
        ipath = os.path.join(folder, sh["images"])
        lpath = os.path.join(folder, sh["labels"])
        try:
            a = np.load(ipath, mmap_mode="r")
            lab = np.load(lpath)
        except (OSError, ValueError) as e:
            raise DataError(f"{ipath}: unreadable shard ({e})") from None
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (meta["size"], meta["size"], 3) \
                or len(a) != sh["count"] or len(lab) != sh["count"]:
            raise DataError(f"{ipath}: shard shape {a.shape} {a.dtype} or {len(lab)} labels "
                            f"does not match meta.json ({sh['count']} x {meta['size']}^2 x 3)")
        del a                                   # checked; mapped again on use (ShardedImages)
        paths.append(ipath)
        counts.append(sh["count"])
        labels.append(lab.astype(np.int32))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    n_classes = len(meta["classes"])
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{folder}: label out of range for {n_classes} classes")
    try:
        mean = np.load(os.path.join(folder, meta.get("mean", MEAN))).astype(np.float32)
    except (OSError, ValueError) as e:
        raise DataError(f"{os.path.join(folder, MEAN)}: unreadable mean image ({e})") from None
    pca = meta.get("pca")
    if pca is not None:
        pca = (np.asarray(pca["eigenvalues"], np.float32), np.asarray(pca["eigenvectors"], np.float32))
    return Dataset(meta.get("name") or os.path.basename(os.path.normpath(folder)), split,
                   ShardedImages(paths, counts, (meta["size"], meta["size"], 3)), labels, meta["classes"],
                   mean=mean, pca=pca,
                   source=folder, prepared=True)
