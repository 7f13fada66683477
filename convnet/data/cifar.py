"""CIFAR-10 in its original form: a folder of python batches (data_batch_1..5,
test_batch, batches.meta). The batches are pickles; only dicts, lists, bytes
and NumPy arrays are rebuilt from them, any other class is refused.
"""
import os
import pickle

import numpy as np

from convnet import fsio
from convnet.data.dataset import Dataset, cached_train, check_labels
from convnet.data.errors import DataError

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
    import io
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(fsio.read_regular(path)), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as e:
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
        check_labels(lab, len(classes), path)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)

    def train():
        return load_cifar_batches(folder, "train")

    return Dataset("cifar10", split, np.ascontiguousarray(np.concatenate(images)),
                   np.concatenate(labels).astype(np.int32), classes,
                   train_loader=cached_train(("cifar-batches", os.path.abspath(folder)), train), source=folder)

