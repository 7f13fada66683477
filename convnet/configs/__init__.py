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
(deep copies: changing them does not change the module). A file that does not
run (syntax error, an exception or a missing import at load time), LAYERS that
is not a non-empty list of dicts, or HYPER values of the wrong type raise
ConfigError (a ValueError), one line naming the file and the problem.
check_size(cfg) refuses a net too large to build (2^40-wide layers) before
anything is allocated.
"""
import copy
import os
import pkgutil
import runpy

# HYPER key -> (types, lower bound or None) of its value
_NUMBER = (int, float)
HYPER_TYPES = {"lr": (_NUMBER, 0.0), "momentum": (_NUMBER, 0.0), "weight_decay": (_NUMBER, 0.0),
               "init_std": (_NUMBER, 0.0), "bias_init": (_NUMBER, None), "batch_size": ((int,), 1),
               "epochs": ((int,), 1), "lr_schedule": ((dict,), None), "layers": ((dict,), None)}
MAX_PARAMS = 1 << 31            # parameters of one net (8 GiB of float32; AlexNet has 61 million)
MAX_UNITS = 1 << 31             # output units of all layers for one image


class ConfigError(ValueError):
    """A config that cannot be used; str(e) is one line naming it and the problem."""

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
        if not os.path.exists(text):
            raise ConfigError(f"config file '{text}' does not exist")
        if not os.path.isfile(text):
            raise ConfigError(f"config file '{text}' is not a regular file")
        values = _run(text)
        name = os.path.splitext(os.path.basename(text))[0]
    else:
        name = text.replace("_", "-")            # "alexnet_1col" is accepted for "alexnet-1col"
        if name not in available():
            raise ConfigError(f"unknown config '{text}': choose one of {', '.join(available())}")
        values = _run(os.path.join(_HERE, name.replace("-", "_") + ".py"))
    cfg = {"name": name, "LAYERS": values.get("LAYERS"), "HYPER": values.get("HYPER", {})}
    check_config(cfg, text)
    return {"name": name, "LAYERS": copy.deepcopy(cfg["LAYERS"]), "HYPER": copy.deepcopy(cfg["HYPER"])}


def _run(path):
    """The globals of a config file; any failure while running it -> ConfigError (file:line: problem)."""
    try:
        return runpy.run_path(path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except ImportError as e:
        raise ConfigError(f"{path}: import failed: {e}") from None
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:                  # the file is user code: whatever it raises is bad input
        line = _line_in(e, path)
        raise ConfigError(f"{path}{line}: raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          .rstrip(": ")) from None


def _line_in(exc, path):
    tb, line = exc.__traceback__, ""
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def _is_number(v, types):
    return isinstance(v, types) and not isinstance(v, bool)


def check_config(cfg, source=None):
    """LAYERS a non-empty list of dicts with string names and types; HYPER a dict whose known
    keys have values of the right type. ConfigError (one line) otherwise."""
    where = f"config '{source or cfg.get('name')}'"
    layers, hyper = cfg.get("LAYERS"), cfg.get("HYPER", {})
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where} must define LAYERS as a non-empty list of layer dicts")
    for i, L in enumerate(layers):
        if not isinstance(L, dict):
            raise ConfigError(f"{where}: LAYERS[{i}] must be a dict, got {type(L).__name__}")
        for key in ("name", "type"):
            if not isinstance(L.get(key), str) or not L.get(key):
                raise ConfigError(f"{where}: LAYERS[{i}] needs a '{key}' (a non-empty string), "
                                  f"got {L.get(key)!r}")
        for key, value in L.items():
            if key in ("filters", "size", "stride", "outputs", "groups") and not (
                    _is_number(value, (int,)) and value >= 1):
                raise ConfigError(f"{where}: layer '{L['name']}': {key} must be an integer >= 1, got {value!r}")
            if key == "pad" and not (_is_number(value, (int,)) and value >= 0):
                raise ConfigError(f"{where}: layer '{L['name']}': pad must be an integer >= 0, got {value!r}")
        if L["type"] == "data":
            shape = L.get("shape")
            if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(
                    _is_number(d, (int,)) and d >= 1 for d in shape):
                raise ConfigError(f"{where}: layer '{L['name']}': shape must be [C, H, W] of integers >= 1, "
                                  f"got {shape!r}")
    if not isinstance(hyper, dict):
        raise ConfigError(f"{where}: HYPER must be a dict, got {type(hyper).__name__}")
    for key, (types, low) in HYPER_TYPES.items():
        if key not in hyper:
            continue
        v = hyper[key]
        if not _is_number(v, types) or (low is not None and not v >= low) or (
                types is _NUMBER and v != v):
            kind = {_NUMBER: "a number", (int,): "an integer", (dict,): "a dict"}[types]
            bound = f" >= {low:g}" if low is not None else ""
            raise ConfigError(f"{where}: HYPER['{key}'] must be {kind}{bound}, got {v!r}")
    sched = hyper.get("lr_schedule")
    if sched is not None and not isinstance(sched.get("type", "plateau"), str):
        raise ConfigError(f"{where}: HYPER['lr_schedule']['type'] must be a string, got {sched.get('type')!r}")
    for pattern, over in (hyper.get("layers") or {}).items():
        if not isinstance(over, dict):
            raise ConfigError(f"{where}: HYPER['layers'][{pattern!r}] must be a dict, got {type(over).__name__}")
        for k, v in over.items():
            if not _is_number(v, _NUMBER):
                raise ConfigError(f"{where}: HYPER['layers'][{pattern!r}]['{k}'] must be a number, got {v!r}")


def check_size(cfg, source=None):
    """Refuse (ConfigError) a net with more than MAX_PARAMS parameters or MAX_UNITS output
    units per image, from its shapes alone (nothing allocated). Other build errors are
    left to the real build."""
    from convnet.net import Net
    try:
        net = Net(cfg, materialize=False)
    except (TypeError, ValueError):
        return
    units = sum(_prod(layer.out_shape) for layer in net.layers.values())
    where = f"config '{source or cfg.get('name')}'"
    if net.num_params > MAX_PARAMS:
        raise ConfigError(f"{where}: {net.num_params:,} parameters, more than this code builds "
                          f"({MAX_PARAMS:,}); a layer is far too large")
    if units > MAX_UNITS:
        raise ConfigError(f"{where}: {units:,} output units per image, more than this code builds "
                          f"({MAX_UNITS:,}); a layer is far too large")


def _prod(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def output_width(cfg):
    """Outputs of the layer feeding softmax_loss (the number of classes the net tells apart), or None."""
    by_name = {L.get("name"): L for L in cfg["LAYERS"]}
    for L in cfg["LAYERS"]:
        if L.get("type") == "softmax_loss":
            src = L.get("inputs")
            src = by_name.get(src[0] if isinstance(src, list) and src else src, {})
            out = src.get("outputs") if isinstance(src, dict) else None
            return out if isinstance(out, int) else None
    return None
