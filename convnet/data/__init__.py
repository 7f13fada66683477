"""Datasets and input pipelines.

    from convnet.data import load_dataset, make_loader, DataError
    train = load_dataset("fashion-mnist", "train")     # or "cifar10", or a path
    for x, labels in make_loader(train, 128, train=True, seed=0, epoch=e):
        ...                                            # x float32 NCHW, labels int32

Sources, normalisation and augmentation: convnet/data/readers.py,
convnet/data/loader.py, convnet/data/augment.py; the prepared format:
docs/data-format.md.
"""
from convnet.data.errors import DataError
from convnet.data.readers import Dataset, load_dataset
from convnet.data.augment import Augment
from convnet.data.loader import Loader, make_loader
from convnet.data.views import eval_views

__all__ = ["DataError", "Dataset", "load_dataset", "Augment", "Loader", "make_loader", "eval_views"]
