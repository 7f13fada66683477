"""Batches for training and testing: make_loader.

Normalisation (every source, every backend): x = (image - mean image of the
train split) / 255, float32 NCHW, labels int32. With augmentation the mean
image is cropped (and reflected) with the image and PCA lighting is added
before the division (see convnet/data/augment.py).

- Training order: a permutation drawn from default_rng([seed, epoch]);
  testing: in order. Batch b's augmentation parameters come from
  default_rng([seed, epoch, b]) -- the same on every backend.
- Augmentation: `augment=None` -> the paper's (random 227 crops of 256
  images, flips, PCA lighting sigma 0.1) for prepared sets when training,
  none for in-memory sets; True -> Augment(); False -> none; or an Augment.
  Without augmentation (and always when not training) images are centre
  crops of the same size (227 for 256-pixel images, the whole image
  otherwise).
- device (convnet.backend; default the host): the host and emulated devices
  get NumPy batches, augmented by the NumPy version (the net copies them to
  its first column's device); a GPU gets CuPy batches on that GPU: uint8
  crops go there (pinned memory, their own stream) and kernels/augment.cu
  runs there.
- shard=(rank, ranks) (data parallelism): every batch is the same global
  batch as without it, and this loader yields only rows lo:hi of it
  (`rows(b)`: the contiguous split of np.array_split, so slices differ by
  at most one row and a short last batch is split too; a slice may be
  empty); the augmentation parameters are drawn for the whole global batch
  and sliced, so each row is augmented as in one process.
- In-memory sets on the NumPy path are sliced in the caller's thread (a
  batch of 128 Fashion-MNIST images costs about 0.1 ms); prepared sets and
  the CUDA path go through the threaded pipeline (convnet/data/pipeline.py).
"""
import numpy as np

from convnet import backend
from convnet.data import augment as aug
from convnet.data.errors import DataError
from convnet.data.pipeline import Pipeline


class Loader:
    """An iterable of (x float32 (B, C, crop, crop), labels int32 (B,)) batches."""

    def __init__(self, dataset, batch_size, train, seed=0, epoch=0, augment=None,
                 device=None, drop_last=False, depth=2, shard=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise DataError(f"batch_size {batch_size!r}: must be a positive int")
        device = backend.cpu() if device is None else device
        if not isinstance(device, backend.Device):
            raise DataError(f"device {device!r}: must be a convnet.backend device")
        gpu = device.kind == "cuda"
        if augment is not None and not isinstance(augment, (bool, aug.Augment)):
            raise DataError(f"augment {augment!r}: must be None, True, False or an Augment")
        n, h, w, c = dataset.images.shape
        if h != w and (augment or dataset.prepared or gpu):
            raise DataError(f"{dataset.name}: crops and the CUDA path need square images, got {h}x{w}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.device = device
        self.gpu = gpu
        self.drop_last = bool(drop_last)
        self.depth = depth
        spec = augment if isinstance(augment, aug.Augment) else aug.Augment()
        self.random = self.train and (augment is True or isinstance(augment, aug.Augment)
                                      or (augment is None and dataset.prepared))
        self.augment = spec
        self.crop = spec.crop_for(h) if h == w else None
        self.size = h
        self.width = w
        self.channels = c
        self.n = n
        self._pipeline = None
        if shard is None:
            shard = (0, 1)
        rank, ranks = shard
        if not (isinstance(ranks, (int, np.integer)) and isinstance(rank, (int, np.integer))
                and ranks >= 1 and 0 <= rank < ranks):
            raise DataError(f"shard {shard!r}: must be (rank, ranks) with 0 <= rank < ranks")
        self.shard = (int(rank), int(ranks))

    @property
    def shape(self):
        """(C, crop, crop): the shape of one example ((C, H, W) for non-square images)."""
        if self.crop is None:
            return (self.channels, self.size, self.width)
        return (self.channels, self.crop, self.crop)

    @property
    def num_classes(self):
        return len(self.dataset.classes)

    def __len__(self):
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def order(self):
        if self.train:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return np.arange(self.n)

    def global_count(self, b):
        """Images in global batch b (all shards together)."""
        return min(self.batch_size, self.n - b * self.batch_size)

    def rows(self, b):
        """(lo, hi, n): this shard's rows lo:hi of global batch b, which has n images."""
        n = self.global_count(b)
        rank, ranks = self.shard
        return n * rank // ranks, n * (rank + 1) // ranks, n

    def batches(self):
        """(batch index, image indices) of every batch (this shard's rows of it), in order."""
        order = self.order()
        for b in range(len(self)):
            lo, hi, _ = self.rows(b)
            yield b, order[b * self.batch_size + lo:b * self.batch_size + hi]

    def params(self, b, count):
        """(offsets, flips, light) of this shard's `count` images of batch b: drawn for the whole
        global batch, then sliced."""
        c = self.channels
        if not self.random:
            return aug.center_params(count, self.size, self.crop, c)
        lo, hi, n = self.rows(b)
        if hi - lo != count:
            raise ValueError(f"batch {b}: {count} images but this shard has rows {lo}:{hi}")
        rng = aug.batch_rng(self.seed, self.epoch, b)
        pca = self.dataset.pca if (self.augment.lighting and c == 3) else None
        params = aug.draw_params(rng, n, self.size, self.crop, c, flip=self.augment.flip,
                                 lighting=self.augment.lighting, pca=pca)
        return tuple(a[lo:hi] for a in params)

    # -- stages ------------------------------------------------------------
    def read(self, job):
        """Stage 1: gather the uint8 images and labels of one batch."""
        b, idx = job
        if self.dataset.prepared:
            # gather in increasing index order (sequential reads of the shards), then unsort
            order = np.argsort(idx, kind="stable")
            images = np.empty((len(idx),) + tuple(self.dataset.images.shape[1:]), np.uint8)
            images[order] = self.dataset.images[idx[order]]
        else:
            images = self.dataset.images[idx]
        return b, images, self.dataset.labels[idx]

    def prepare(self, item):
        """Stage 2: augment on the CPU (NumPy backends) or pass uint8 on (CUDA)."""
        b, images, labels = item
        params = self.params(b, len(images))
        if self.gpu:
            return b, images, labels, params
        return aug.augment_batch(images, self._mean, *params, self.crop), labels

    def _fast_batch(self, b, idx):
        """In-memory sets without random crops: one vectorised gather and normalise."""
        images = self.dataset.images[idx]
        if self.crop is not None and (self.random and (self.augment.flip or self.augment.lighting)
                                      or self.crop != self.size):
            return aug.augment_batch(images, self._mean, *self.params(b, len(idx)), self.crop), \
                self.dataset.labels[idx]
        return aug.normalize(images, self._mean), self.dataset.labels[idx]

    # -- iteration -----------------------------------------------------------
    def __iter__(self):
        self._mean = np.asarray(self.dataset.mean, np.float32)
        if not self.gpu and not self.dataset.prepared:
            for b, idx in self.batches():
                yield self._fast_batch(b, idx)
            return
        device = None
        stages = [self.read, self.prepare]
        if self.gpu:
            from convnet.data.gpu import DeviceStage
            device = DeviceStage(self, self.device)
            stages.append(device)
        self._pipeline = Pipeline(self.batches(), stages, depth=self.depth, name="loader")
        try:
            it = iter(self._pipeline)
            while True:
                if device is not None:
                    device.consumer_mark()      # work queued so far on the caller's stream
                try:
                    item = next(it)
                except StopIteration:
                    return
                yield item
        finally:
            self.close()

    def close(self):
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_loader(dataset, batch_size, train, seed=0, epoch=0, augment=None, device=None,
                drop_last=False, shard=None):
    """An iterable of (x, labels) batches of `dataset`; see the module docstring."""
    return Loader(dataset, batch_size, train, seed=seed, epoch=epoch, augment=augment,
                  device=device, drop_last=drop_last, shard=shard)
