"""A tiny two-column net for Fashion-MNIST (1 x 28 x 28): the paper's layout in miniature.

Each column: conv 5x5 (8 filters, ReLU) -> LRN -> max-pool 3/2 -> conv 3x3 (12 filters,
ReLU); the columns meet at conv3 (which reads both), split again into fc 32 ReLU ->
dropout 0.5 per column, and fc 10 on column 0 reads both. Sizes 28 -> 24 -> 12 -> 12 -> 6.
Columns go to the devices in turn: `--device emu --gpus 0,1` puts them on two
emulated devices, `--gpus 0,1` on two GPUs. Small enough to train a few steps on the
CPU emulation in seconds (the README's example), not to be accurate.
"""

LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}

LAYERS = [{"name": "data", "type": "data", "shape": [1, 28, 28]}]
for _c, _s in ((0, "a"), (1, "b")):
    LAYERS += [
        {"name": f"conv1{_s}", "type": "conv", "inputs": "data", "column": _c,
         "filters": 8, "size": 5, "neuron": "relu"},
        {"name": f"lrn1{_s}", "type": "lrn", "inputs": f"conv1{_s}", "column": _c, **LRN},
        {"name": f"pool1{_s}", "type": "pool", "inputs": f"lrn1{_s}", "column": _c, "size": 3, "stride": 2},
        {"name": f"conv2{_s}", "type": "conv", "inputs": f"pool1{_s}", "column": _c,
         "filters": 12, "size": 3, "pad": 1, "neuron": "relu"},
    ]
for _c, _s in ((0, "a"), (1, "b")):
    LAYERS += [
        {"name": f"conv3{_s}", "type": "conv", "inputs": ["conv2a", "conv2b"], "column": _c,
         "filters": 12, "size": 3, "pad": 1, "neuron": "relu"},
        {"name": f"pool3{_s}", "type": "pool", "inputs": f"conv3{_s}", "column": _c, "size": 2, "stride": 2},
        {"name": f"fc4{_s}", "type": "fc", "inputs": f"pool3{_s}", "column": _c, "outputs": 32, "neuron": "relu"},
        {"name": f"drop4{_s}", "type": "dropout", "inputs": f"fc4{_s}", "column": _c, "p": 0.5},
    ]
LAYERS += [
    {"name": "fc5", "type": "fc", "inputs": ["drop4a", "drop4b"], "column": 0, "outputs": 10},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc5", "column": 0},
]
del _c, _s

HYPER = {
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 32,
    "epochs": 1,
    "init_std": 0.05,
    "bias_init": 0.1,
    "lr_schedule": {"type": "constant"},
    "layers": {"conv1*": {"init_std": 0.2}, "conv2*": {"init_std": 0.12}, "conv3*": {"init_std": 0.1}},
}
