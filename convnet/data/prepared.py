"""Folders written by `python -m convnet.prepare`: memory-mapped uint8 shards
(the format: convnet/data/format.py, docs/data-format.md)."""
import os

import numpy as np

from convnet import fsio
from convnet.data.dataset import Dataset, check_labels
from convnet.data.errors import DataError
from convnet.data.format import MEAN, ShardedImages, read_meta


def _split_name(meta, split, path):
    splits = meta["splits"]
    if split in splits:
        return split
    alias = {"test": "val", "val": "test"}.get(split)
    if alias in splits:
        return alias
    raise DataError(f"{path}: no {split!r} split (has {', '.join(sorted(splits))})")


def _regular(path, what):
    if not fsio.is_regular(path):
        raise DataError(f"{path}: {what} is {fsio.kind_of(path)}, not a regular file")


def load_prepared(folder, split):
    meta = read_meta(folder)
    split = _split_name(meta, split, folder)
    paths, counts, labels = [], [], []
    for sh in meta["splits"][split]["shards"]:
        ipath = os.path.join(folder, sh["images"])
        lpath = os.path.join(folder, sh["labels"])
        _regular(ipath, "a shard")
        _regular(lpath, "a label file")
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
    check_labels(labels, len(meta["classes"]), folder)
    _regular(os.path.join(folder, meta.get("mean", MEAN)), "the mean image")
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
