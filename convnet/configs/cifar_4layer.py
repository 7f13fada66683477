"""The paper's small CIFAR-10 net (its Figure 1 and Section 3.3): four layers with weights,
trained on random 24 x 24 crops of the 32 x 32 images.

    3x24x24 -> conv 5x5 32 -> max-pool 3/2 -> LRN -> conv 5x5 32 -> LRN -> avg-pool 3/2
            -> conv 5x5 64 -> avg-pool 3/2 -> fc 10 -> softmax
    sizes 24 -> 12 -> 6 -> 3 (every conv pads by 2, so it keeps the size)

The paper gives only "a four-layer convolutional network" for these CIFAR-10
results; the layers here are those of cuda-convnet's CIFAR-10 example nets
(three 5x5 conv layers of 32, 32, 64 filters with pooling between them, and a
10-way fc layer), with two changes so that one config serves every CIFAR-10
experiment of `python -m convnet.experiment`:
- 24 x 24 inputs: training takes random crops, flips and PCA lighting of the
  32 x 32 images and testing the centre crop (or ten crops), as the paper did
  with 227-pixel crops of 256-pixel ImageNet images. `HYPER["augment"]`
  sets the loader's flips and lighting sigma (0 turns lighting off; see the
  note there on its units).
- The normalization is the paper's across-channel LRN (n = 5, k = 2,
  beta 0.75) with alpha = 1e-4 * 255^2 (about 6.5) on the plain sum: the
  paper's alpha belongs to activations of images in 0..255 units, and this
  net's inputs are in 0..1 units (/ 255), which scales the sums of squares
  by 1 / 255^2. With the paper's 1e-4 here the divisor was within 1.3% of
  a constant everywhere (measured on a trained net): no normalization at all.
  With 6.5 it ranges over about 1.7 to 2.4 (at the 1st and 99th percentile,
  conv2's outputs after 30 steps).

The experiments make their variants from this one (tanh in place of ReLU, no
LRN, 2x2 pooling, dropout before fc10) by editing the plain data below.
Initial weights: N(0, s^2) with s about sqrt(2 / fan-in) (the paper's 0.01
everywhere starts a net this shallow very slowly); learning rate, momentum and
decay are the paper's ImageNet settings except the rate, 0.01 -> 0.02 with
this net's mean (not summed) loss over a batch of 128.
"""

LRN = {"size": 5, "alpha": 1e-4 * 255 ** 2, "beta": 0.75, "k": 2.0}

LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 24, 24]},
    {"name": "conv1", "type": "conv", "inputs": "data",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool1", "type": "pool", "inputs": "conv1", "mode": "max", "size": 3, "stride": 2},
    {"name": "norm1", "type": "lrn", "inputs": "pool1", **LRN},
    {"name": "conv2", "type": "conv", "inputs": "norm1",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "norm2", "type": "lrn", "inputs": "conv2", **LRN},
    {"name": "pool2", "type": "pool", "inputs": "norm2", "mode": "avg", "size": 3, "stride": 2},
    {"name": "conv3", "type": "conv", "inputs": "pool2",
     "filters": 64, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool3", "type": "pool", "inputs": "conv3", "mode": "avg", "size": 3, "stride": 2},
    {"name": "fc10", "type": "fc", "inputs": "pool3", "outputs": 10},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc10"},
]

HYPER = {
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "epochs": 30,
    "init_std": 0.01,
    "bias_init": 0.0,
    "lr_schedule": {"type": "plateau"},
    # PCA lighting with the paper's sigma (the loader applies it to pixel values in 0..1 units,
    # convnet/data/augment.py; the same shifts as the earlier setting 0.1 / 255 in 0..255 units)
    "augment": {"flip": True, "lighting": 0.1},
    "layers": {
        "conv1": {"init_std": 0.16},    # fan-in 75
        "conv2": {"init_std": 0.05},    # fan-in 800
        "conv3": {"init_std": 0.05},    # fan-in 800
        "fc10": {"init_std": 0.06},     # fan-in 576
    },
}
