"""cuda-convnet's CIFAR-10 example "layers-80sec" (docs/spec.md): about 26% test error in 80 s
on a GTX 580.

Three 5x5 pad-2 conv layers of 32, 32 and 64 filters with ReLU, each followed
by 3x3 stride-2 pooling (max, average, average), fc 64 with ReLU, fc 10,
softmax. 3 x 32 x 32 -> 32x16x16 -> 32x8x8 -> 64x4x4 -> 64 -> 10.
"""

LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 32, 32]},
    {"name": "conv1", "type": "conv", "inputs": "data",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool1", "type": "pool", "inputs": "conv1", "mode": "max", "size": 3, "stride": 2},
    {"name": "conv2", "type": "conv", "inputs": "pool1",
     "filters": 32, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool2", "type": "pool", "inputs": "conv2", "mode": "avg", "size": 3, "stride": 2},
    {"name": "conv3", "type": "conv", "inputs": "pool2",
     "filters": 64, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "pool3", "type": "pool", "inputs": "conv3", "mode": "avg", "size": 3, "stride": 2},
    {"name": "fc64", "type": "fc", "inputs": "pool3", "outputs": 64, "neuron": "relu"},
    {"name": "fc10", "type": "fc", "inputs": "fc64", "outputs": 10},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc10"},
]

# docs/spec.md gives the recipe of layers-18pct only; this uses the same SGD settings.
# The per-layer initial std follow cuda-convnet's example configs as we recall
# them (small conv1 weights, larger fc weights); they are not in docs/spec.md.
HYPER = {
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.004,
    "batch_size": 128,
    "epochs": 10,
    "init_std": 0.01,
    "bias_init": 0.0,
    "lr_schedule": {"type": "constant"},
    "layers": {
        "conv1": {"init_std": 1e-4},
        "fc*": {"init_std": 0.1},
    },
}
