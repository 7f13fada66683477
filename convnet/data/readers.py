"""Which reader a dataset source needs, and the one entry point: load_dataset.

Sources: "fashion-mnist" (IDX files, convnet/data/idx.py), "cifar10" and other
folder trees or their .tar.gz (convnet/data/tree.py), the original CIFAR-10
python batches (convnet/data/cifar.py), and folders written by
`python -m convnet.prepare` (convnet/data/prepared.py). Every reader returns a
Dataset (convnet/data/dataset.py).

Dataset, read_idx, FASHION_MNIST_DIR and the other names in __all__ are
re-exported here for code that imported them from this module before the
readers were split by format.
"""
import os
import tarfile

from convnet.data import cifar, idx, prepared, tree
from convnet.data import format as fmt
from convnet.data.dataset import (SPLITS, Dataset, cache_dir, mean_image, pca_from_moments,
                                  rgb_moments, rgb_pca)
from convnet.data.errors import DataError
from convnet.data.idx import FASHION_CLASSES, FASHION_MNIST_DIR, read_idx

__all__ = ["load_dataset", "resolve_source", "DataError", "Dataset", "SPLITS", "cache_dir", "mean_image",
           "pca_from_moments", "rgb_moments", "rgb_pca", "FASHION_CLASSES", "FASHION_MNIST_DIR", "read_idx"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where the name "cifar10" looks (first that exists), unless CONVNET_CIFAR10 is set: data/README.md
CIFAR10_DEFAULTS = [os.path.join(REPO_ROOT, "data", "cifar10"),
                    os.path.join(REPO_ROOT, "data", "cifar10-jpg.tar.gz")]


def resolve_source(source):
    """A source name or path -> (kind, folder, name)."""
    name = None
    if source == "fashion-mnist":
        folder = os.environ.get("CONVNET_FASHION_MNIST") or idx.FASHION_MNIST_DIR
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
            if tree.is_tree_archive(source):
                if name is None and "cifar" in os.path.basename(source).lower():
                    name = "cifar10"
                return "tree-archive", source, name
            source = tree.extract_archive(source)
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
    if os.path.exists(os.path.join(folder, fmt.META)):
        return "prepared"
    if cifar.is_cifar_batches(folder):
        return "cifar-batches"
    if tree.is_split_tree(folder):
        return "tree"
    if idx.is_idx_folder(folder):
        return "idx"
    return None


def load_dataset(source="fashion-mnist", split="train"):
    """Load one split of a dataset (see the module docstring for the sources)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    kind, folder, name = resolve_source(source)
    if kind == "idx":
        return idx.load_idx_folder(folder, "train" if split == "train" else "test", name)
    if kind == "cifar-batches":
        return cifar.load_cifar_batches(folder, "train" if split == "train" else "test")
    if kind == "tree":
        return tree.load_split_tree(folder, split, name)
    if kind == "tree-archive":
        return tree.load_tree_archive(folder, split, name)
    return prepared.load_prepared(folder, split)
