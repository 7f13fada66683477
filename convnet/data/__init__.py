"""Datasets and input pipelines.

    from convnet.data import load_dataset, make_loader, DataError
    train = load_dataset("fashion-mnist", "train")     # or "cifar10", or a path
    for x, labels in make_loader(train, 128, train=True, seed=0, epoch=e):
        ...                                            # x float32 NCHW, labels int32

Readers, one module per format: idx.py (Fashion-MNIST), cifar.py (CIFAR-10
python batches), tree.py (folder trees and their archives), prepared.py
(folders made by convnet.prepare; the format: format.py and
docs/data-format.md); readers.py picks one for a source (load_dataset);
dataset.py is the Dataset they return. Normalisation and augmentation:
loader.py, augment.py.
"""
from convnet.data.errors import DataError
from convnet.data.dataset import Dataset
from convnet.data.readers import load_dataset
from convnet.data.augment import Augment
from convnet.data.loader import Loader, make_loader
from convnet.data.views import eval_views

__all__ = ["DataError", "Dataset", "load_dataset", "Augment", "Loader", "make_loader", "eval_views"]
