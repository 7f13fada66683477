"""The paper's one-column ablation: AlexNet with half the kernels of each layer.

Every layer of one AlexNet column (conv1 48, conv2 128, conv3 192, conv4 192,
conv5 128, fc6 2048, fc7 2048 units) on one device, conv3 and fc6 reading only
that column, and the same 1000-way fc8. The paper: two columns beat this by
1.7% top-1 and 1.2% top-5 error.

16,630,440 parameters, 330,136 neurons.
"""

LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
POOL = {"mode": "max", "size": 3, "stride": 2}

LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 227, 227]},
    {"name": "conv1", "type": "conv", "inputs": "data",
     "filters": 48, "size": 11, "stride": 4, "pad": 0, "neuron": "relu"},
    {"name": "lrn1", "type": "lrn", "inputs": "conv1", **LRN},
    {"name": "pool1", "type": "pool", "inputs": "lrn1", **POOL},
    {"name": "conv2", "type": "conv", "inputs": "pool1",
     "filters": 128, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "lrn2", "type": "lrn", "inputs": "conv2", **LRN},
    {"name": "pool2", "type": "pool", "inputs": "lrn2", **POOL},
    {"name": "conv3", "type": "conv", "inputs": "pool2",
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv4", "type": "conv", "inputs": "conv3",
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv5", "type": "conv", "inputs": "conv4",
     "filters": 128, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "pool5", "type": "pool", "inputs": "conv5", **POOL},
    {"name": "fc6", "type": "fc", "inputs": "pool5", "outputs": 2048, "neuron": "relu"},
    {"name": "drop6", "type": "dropout", "inputs": "fc6", "p": 0.5},
    {"name": "fc7", "type": "fc", "inputs": "drop6", "outputs": 2048, "neuron": "relu"},
    {"name": "drop7", "type": "dropout", "inputs": "fc7", "p": 0.5},
    {"name": "fc8", "type": "fc", "inputs": "drop7", "outputs": 1000},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc8"},
]

HYPER = {
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "epochs": 90,
    "init_std": 0.01,
    "bias_init": 0.0,
    "lr_schedule": {"type": "plateau", "factor": 10.0, "patience": 5, "max_drops": 3},
    "layers": {
        "conv[245]": {"bias_init": 1.0},
        "fc*": {"bias_init": 1.0},
    },
}
