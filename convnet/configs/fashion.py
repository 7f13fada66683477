"""The default net: a small AlexNet-style CNN for Fashion-MNIST (1 x 28 x 28, 10 classes).

conv 5x5 -> ReLU -> max-pool 3/2 (overlapping, as in the paper) -> conv 5x5 ->
ReLU -> max-pool 3/2 -> fc 256 ReLU -> dropout 0.5 -> fc 10 -> softmax.
Sizes: 28 -> 24 -> 12 (pool: ceil((24 - 3) / 2) + 1) -> 8 -> 4.

Plain data (mean image subtracted, / 255; no augmentation). Sized so that
`python -m convnet.train` reaches >= 90% test accuracy on a 2-core CPU with
the NumPy reference in a few minutes (measured: see the README/report).
"""

POOL = {"mode": "max", "size": 3, "stride": 2}

LAYERS = [
    {"name": "data", "type": "data", "shape": [1, 28, 28]},
    {"name": "conv1", "type": "conv", "inputs": "data",
     "filters": 32, "size": 5, "stride": 1, "pad": 0, "neuron": "relu"},
    {"name": "pool1", "type": "pool", "inputs": "conv1", **POOL},
    {"name": "conv2", "type": "conv", "inputs": "pool1",
     "filters": 64, "size": 5, "stride": 1, "pad": 0, "neuron": "relu"},
    {"name": "pool2", "type": "pool", "inputs": "conv2", **POOL},
    {"name": "fc3", "type": "fc", "inputs": "pool2", "outputs": 256, "neuron": "relu"},
    {"name": "drop3", "type": "dropout", "inputs": "fc3", "p": 0.5},
    {"name": "fc4", "type": "fc", "inputs": "drop3", "outputs": 10},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc4"},
]

HYPER = {
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "epochs": 3,
    # The paper's N(0, 0.01^2) everywhere makes a net this shallow on [-1, 1] inputs
    # start very slowly; per-layer stds of about sqrt(2 / fan-in) (He et al.) instead.
    "init_std": 0.01,
    "bias_init": 0.0,
    "lr_schedule": {"type": "plateau", "factor": 10.0, "patience": 1, "max_drops": 3},
    "layers": {
        "conv1": {"init_std": 0.28},    # fan-in 25
        "conv2": {"init_std": 0.05},    # fan-in 800
        "fc3": {"init_std": 0.044},     # fan-in 1024
        "fc4": {"init_std": 0.06},      # fan-in 256
        "fc3*": {"bias_init": 0.1},
    },
}
