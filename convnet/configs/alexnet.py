"""AlexNet as in the paper (docs/spec.md): two columns, one per GPU.

Input 3 x 227 x 227 (the paper writes 224; 227 gives 55 x 55 after conv1 with
no padding). Column 0 layers end in "a", column 1 layers in "b". The columns
meet where the paper crosses GPUs: conv3, fc6, fc7 read both columns, and fc8
(one layer, on column 0) reads both fc7 halves. Written as one device,
conv2/4/5 are grouped convolutions with groups = 2 and LRN runs within each
column's channels.

60,965,224 parameters, 659,272 neurons.
"""

LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}     # the paper's k, n, alpha, beta
POOL = {"mode": "max", "size": 3, "stride": 2}               # overlapping pooling, z = 3, s = 2

LAYERS = [
    {"name": "data", "type": "data", "shape": [3, 227, 227]},

    # ---- column 0 (GPU 0) -----------------------------------------------  ---- column 1 (GPU 1)
    {"name": "conv1a", "type": "conv", "inputs": "data", "column": 0,
     "filters": 48, "size": 11, "stride": 4, "pad": 0, "neuron": "relu"},
    {"name": "conv1b", "type": "conv", "inputs": "data", "column": 1,
     "filters": 48, "size": 11, "stride": 4, "pad": 0, "neuron": "relu"},
    {"name": "lrn1a", "type": "lrn", "inputs": "conv1a", "column": 0, **LRN},
    {"name": "lrn1b", "type": "lrn", "inputs": "conv1b", "column": 1, **LRN},
    {"name": "pool1a", "type": "pool", "inputs": "lrn1a", "column": 0, **POOL},
    {"name": "pool1b", "type": "pool", "inputs": "lrn1b", "column": 1, **POOL},

    {"name": "conv2a", "type": "conv", "inputs": "pool1a", "column": 0,
     "filters": 128, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "conv2b", "type": "conv", "inputs": "pool1b", "column": 1,
     "filters": 128, "size": 5, "stride": 1, "pad": 2, "neuron": "relu"},
    {"name": "lrn2a", "type": "lrn", "inputs": "conv2a", "column": 0, **LRN},
    {"name": "lrn2b", "type": "lrn", "inputs": "conv2b", "column": 1, **LRN},
    {"name": "pool2a", "type": "pool", "inputs": "lrn2a", "column": 0, **POOL},
    {"name": "pool2b", "type": "pool", "inputs": "lrn2b", "column": 1, **POOL},

    # conv3 reads both columns (cross-GPU)
    {"name": "conv3a", "type": "conv", "inputs": ["pool2a", "pool2b"], "column": 0,
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv3b", "type": "conv", "inputs": ["pool2a", "pool2b"], "column": 1,
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv4a", "type": "conv", "inputs": "conv3a", "column": 0,
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv4b", "type": "conv", "inputs": "conv3b", "column": 1,
     "filters": 192, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv5a", "type": "conv", "inputs": "conv4a", "column": 0,
     "filters": 128, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "conv5b", "type": "conv", "inputs": "conv4b", "column": 1,
     "filters": 128, "size": 3, "stride": 1, "pad": 1, "neuron": "relu"},
    {"name": "pool5a", "type": "pool", "inputs": "conv5a", "column": 0, **POOL},
    {"name": "pool5b", "type": "pool", "inputs": "conv5b", "column": 1, **POOL},

    # fc6 and fc7 read both columns (cross-GPU)
    {"name": "fc6a", "type": "fc", "inputs": ["pool5a", "pool5b"], "column": 0,
     "outputs": 2048, "neuron": "relu"},
    {"name": "fc6b", "type": "fc", "inputs": ["pool5a", "pool5b"], "column": 1,
     "outputs": 2048, "neuron": "relu"},
    {"name": "drop6a", "type": "dropout", "inputs": "fc6a", "column": 0, "p": 0.5},
    {"name": "drop6b", "type": "dropout", "inputs": "fc6b", "column": 1, "p": 0.5},
    {"name": "fc7a", "type": "fc", "inputs": ["drop6a", "drop6b"], "column": 0,
     "outputs": 2048, "neuron": "relu"},
    {"name": "fc7b", "type": "fc", "inputs": ["drop6a", "drop6b"], "column": 1,
     "outputs": 2048, "neuron": "relu"},
    {"name": "drop7a", "type": "dropout", "inputs": "fc7a", "column": 0, "p": 0.5},
    {"name": "drop7b", "type": "dropout", "inputs": "fc7b", "column": 1, "p": 0.5},

    # fc8: one 1000-way layer reading both fc7 halves, no ReLU
    {"name": "fc8", "type": "fc", "inputs": ["drop7a", "drop7b"], "column": 0, "outputs": 1000},
    {"name": "loss", "type": "softmax_loss", "inputs": "fc8", "column": 0},
]

HYPER = {
    "lr": 0.01,                 # the same for every layer
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "epochs": 90,
    "init_std": 0.01,           # weights ~ N(0, 0.01^2)
    "bias_init": 0.0,
    # divide by 10 when the validation error stops improving, three times in ~90 epochs
    # (the paper gives no patience; 5 epochs is our choice)
    "lr_schedule": {"type": "plateau", "factor": 10.0, "patience": 5, "max_drops": 3},
    "layers": {
        # biases 1 in conv2, conv4, conv5 and every fc layer: ReLUs get positive inputs early
        "conv[245]*": {"bias_init": 1.0},
        "fc*": {"bias_init": 1.0},
    },
}
