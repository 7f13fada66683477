"""The prepared-dataset format (version 1): names, the meta file, the shard array.
docs/data-format.md is the full description; `convnet.prepare` writes it and
convnet/data/prepared.py reads it into a Dataset.

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

from convnet import fsio
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
    """OUT/meta.json, checked: DataError (one line) when unreadable, foreign or malformed."""
    path = os.path.join(folder, META)
    try:
        meta = json.loads(fsio.read_regular(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} meta file")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: format version {meta.get('version')}, this code reads version {VERSION}")
    size, classes, splits = meta.get("size"), meta.get("classes"), meta.get("splits")
    if not (isinstance(size, int) and 1 <= size <= 1 << 16) or not isinstance(classes, list) or not classes \
            or not all(isinstance(c, str) for c in classes) or not isinstance(splits, dict):
        raise DataError(f"{path}: malformed (size, classes or splits missing or of the wrong type)")
    for name, s in splits.items():
        shards = s.get("shards") if isinstance(s, dict) else None
        if not isinstance(shards, list) or not all(
                isinstance(sh, dict) and isinstance(sh.get("images"), str) and isinstance(sh.get("labels"), str)
                and isinstance(sh.get("count"), int) and sh["count"] >= 0 for sh in shards):
            raise DataError(f"{path}: malformed split {name!r} (shards must list images, labels and count)")
        for sh in shards:
            for key in ("images", "labels"):
                if os.path.basename(sh[key]) != sh[key] or sh[key].startswith("."):
                    raise DataError(f"{path}: shard file {sh[key]!r} is not a plain name in the folder")
    return meta
