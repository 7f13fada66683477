"""Network configurations, declared as data.

Each module here (and any .py file passed by path) holds two plain values:

    LAYERS  a list of layer dicts, in reading order. Every dict has
              name     unique layer name ("conv1a")
              type     data | conv | fc | relu | tanh | lrn | pool | dropout | softmax_loss
              inputs   a layer name or a list of names (none for "data"); several inputs
                       are concatenated along channels (conv) or features (fc)
              column   which column (0, 1, ...) the layer belongs to; column c runs on
                       devices[c % len(devices)]; default 0
            and the type's own keys (see convnet/layers.py):
              data          shape [C, H, W]
              conv          filters, size, stride=1, pad=0, groups=1, neuron=None ("relu"/"tanh")
              fc            outputs, neuron=None
              lrn           size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1
                            (the paper's convention: alpha multiplies the plain sum)
              pool          mode "max" | "avg", size=3, stride=2
              dropout       p=0.5
              softmax_loss  (mean softmax cross-entropy of its one input; at most one)
    HYPER   the training hyper-parameters, a separate block:
              lr, momentum, weight_decay, batch_size, epochs,
              init_std (weights ~ N(0, init_std^2)), bias_init,
              lr_schedule {"type": "plateau" | "step" | "constant", ...},
              layers: {pattern: overrides} per-layer overrides; a pattern is a layer
                name or an fnmatch pattern ("conv[245]*"); later patterns win.
                Override keys: init_std, bias_init, lr_mult, bias_lr_mult,
                weight_decay, bias_weight_decay, momentum.

load_config(name_or_path) returns {"name": ..., "LAYERS": [...], "HYPER": {...}}
(deep copies: changing them does not change the module).
"""
import copy
import os
import pkgutil
import runpy

_HERE = os.path.dirname(os.path.abspath(__file__))


def available():
    """Names of the shipped configs ('-' for '_' in the file names), sorted."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules([_HERE]))


def load_config(name_or_path):
    """A shipped config by name ("alexnet", "cifar-18pct") or a .py file by path -> dict."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"config must be a name or a path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text.endswith(".py") or os.sep in text:
        if not os.path.isfile(text):
            raise ValueError(f"config file '{text}' does not exist")
        values = runpy.run_path(text)
        name = os.path.splitext(os.path.basename(text))[0]
    else:
        name = text.replace("_", "-")            # "alexnet_1col" is accepted for "alexnet-1col"
        if name not in available():
            raise ValueError(f"unknown config '{text}': choose one of {', '.join(available())}")
        values = runpy.run_path(os.path.join(_HERE, name.replace("-", "_") + ".py"))
    layers, hyper = values.get("LAYERS"), values.get("HYPER", {})
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"config '{name}' must define LAYERS as a non-empty list of layer dicts")
    if not isinstance(hyper, dict):
        raise ValueError(f"config '{name}': HYPER must be a dict")
    return {"name": name, "LAYERS": copy.deepcopy(layers), "HYPER": copy.deepcopy(hyper)}
