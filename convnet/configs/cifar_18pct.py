"""cuda-convnet's CIFAR-10 example "layers-18pct" (docs/spec.md): 18% test error in 20 minutes
on a GTX 580.

The conv layers and pools of layers-80sec (5x5 pad-2 convs of 32, 32, 64 filters
with ReLU; 3x3 stride-2 pooling max, avg, avg), a response normalization after
the first two pools, and fc 10 alone, softmax.

Deviation: cuda-convnet's "rnorm" here normalizes over a 3x3 spatial
neighbourhood within each map; our LRN op (and kernel) is the paper's
across-channel normalization, so this config normalizes over 3 neighbouring
channels instead (alpha 5e-5 on the plain sum, beta 0.75, k 1).
"""

RNORM = {"size": 3, "alpha": 5e-5, "beta": 0.75, "k": 1.0}

LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 32, 32]},
    {"name": "conv1", "type": "conv", "inputs": "data",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool1", "type": "pool", "inputs": "conv1", "mode": "max", "size": 3, "stride": 2},
    {"name": "rnorm1", "type": "lrn", "inputs": "pool1", **RNORM},
    {"name": "conv2", "type": "conv", "inputs": "rnorm1",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool2", "type": "pool", "inputs": "conv2", "mode": "avg", "size": 3, "stride": 2},
    {"name": "rnorm2", "type": "lrn", "inputs": "pool2", **RNORM},
    {"name": "conv3", "type": "conv", "inputs": "rnorm2",
     "filters": 64, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool3", "type": "pool", "inputs": "conv3", "mode": "avg", "size": 3, "stride": 2},
    {"name": "fc10", "type": "fc", "inputs": "pool3", "outputs": 10},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc10"},
]

# docs/spec.md: lr 0.001, momentum 0.9, weight decay 0.004 on the conv layers, lr divided
# by 10 after 120 epochs and again 10 epochs later (then 10 more epochs: our choice).
HYPER = {
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.004,
    "batch_size": 128,
    "epochs": 140,
    "init_std": 0.01,
    "bias_init": 0.0,
    "lr_schedule": {"type": "step", "epochs": [120, 130], "factor": 10.0},
    "layers": {
        "conv1": {"init_std": 1e-4},
        "fc10": {"weight_decay": 0.0, "bias_weight_decay": 0.0},   # docs/spec.md: decay on conv layers
    },
}
