"""The paper's CIFAR-10 claims, re-measured: `python -m convnet.experiment NAME [options]`.

    python -m convnet.experiment relu-vs-tanh     # Figure 1: epochs to 25% training error
    python -m convnet.experiment lrn              # Section 3.3: test error with and without LRN
    python -m convnet.experiment ablations        # pooling overlap, dropout, PCA lighting
    python -m convnet.experiment ten-crop         # centre crop against ten crops
    python -m convnet.experiment precision        # fp32, tf32 and bf16 products, same net
    python -m convnet.experiment NAME --quick     # tiny synthetic data, seconds (CI)

Every experiment trains rows (one network variant and seed each) with
`convnet.train`, one epoch at a time (`--resume` from the row's last.ckpt),
and after each epoch measures the row's checkpoint: training error on a fixed
set of training images (centre crops, test mode, so dropout and augmentation
do not blur it) and test error. It writes into --out (default
docs/results/NAME):

    table.md        the results table, the settings and the command that made it
    *.png           the plots
    settings.json   settings, seeds, device, versions, commit, wall time
    rows/ROW.json   each row's per-epoch results (written atomically as the row
                    finishes; a row's partial results stay in its run folder)

and keeps each row's checkpoints and log in --runs (default runs/experiments/NAME).
Stopped (Ctrl-C, kill) and started again with the same command plus --resume,
it skips finished rows and continues the unfinished one from its last epoch.

The networks are variants of the config `cifar-4layer` (convnet/configs/), made
by editing its plain data: tanh for ReLU, no LRN, 2x2 pooling, dropout before
the output layer, no PCA lighting. The precision rows keep the net and change
`convnet.train --precision` (convnet/precision.py); each is measured in the
precision it was trained in.
"""
import copy
import datetime
import json
import os
import platform
import pprint
import subprocess
import sys
import tempfile
import time

import numpy as np

from convnet import cli

PROG = "convnet.experiment"
BASE_CONFIG = "cifar-4layer"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 1, 130


class UsageError(Exception):
    """Bad input: one line, exit 2."""


# --------------------------------------------------------------------------
# Network variants: edits of the base config's plain data

def _layer(cfg, name):
    return next(L for L in cfg["LAYERS"] if L["name"] == name)


def tanh(cfg):
    """Every ReLU becomes tanh (same init, same everything else)."""
    for L in cfg["LAYERS"]:
        if L.get("neuron") == "relu":
            L["neuron"] = "tanh"
        if L.get("type") == "relu":
            L["type"] = "tanh"
    return cfg


def no_lrn(cfg):
    """Drops every LRN layer, wiring its consumers to its input."""
    layers = cfg["LAYERS"]
    for L in [L for L in layers if L.get("type") == "lrn"]:
        src = L["inputs"]
        for other in layers:
            ins = other.get("inputs")
            if ins == L["name"]:
                other["inputs"] = src
            elif isinstance(ins, list):
                other["inputs"] = [src if i == L["name"] else i for i in ins]
        layers.remove(L)
    return cfg


def non_overlapping_pools(cfg):
    """Every 3x3 stride-2 pool becomes 2x2 stride 2 (the paper's ablation)."""
    for L in cfg["LAYERS"]:
        if L.get("type") == "pool" and L.get("size", 3) == 3 and L.get("stride", 2) == 2:
            L["size"] = 2
    return cfg


def dropout(cfg):
    """Dropout 0.5 on the input of the output fc layer."""
    out = _output_fc(cfg)
    src = out["inputs"]
    i = cfg["LAYERS"].index(out)
    cfg["LAYERS"].insert(i, {"name": "drop", "type": "dropout", "inputs": src, "p": 0.5})
    out["inputs"] = "drop"
    return cfg


def no_lighting(cfg):
    cfg["HYPER"].setdefault("augment", {})["lighting"] = 0.0
    return cfg


def small(cfg):
    """The --quick net: a quarter of the filters, 12 x 12 crops (of the 16 x 16 synthetic
    images) and a larger learning rate, so that a few steps learn something."""
    for L in cfg["LAYERS"]:
        if L.get("type") == "conv":
            L["filters"] = max(4, L["filters"] // 4)
        if L.get("type") == "data":
            L["shape"] = [L["shape"][0], QUICK_CROP, QUICK_CROP]
    cfg["HYPER"]["lr"] = 0.1
    return cfg


def _output_fc(cfg):
    loss = next(L for L in cfg["LAYERS"] if L.get("type") == "softmax_loss")
    src = loss["inputs"]
    return _layer(cfg, src[0] if isinstance(src, list) else src)


def make_config(edits, quick=False):
    from convnet.configs import load_config
    cfg = load_config(BASE_CONFIG)
    for edit in edits:
        cfg = edit(cfg)
    if quick:
        cfg = small(cfg)
    return cfg


def write_config(cfg, path, note):
    """A config file (plain data) that `convnet.train --config PATH` loads."""
    text = (f'"""{note}\n\nWritten by python -m {PROG} from the config {BASE_CONFIG}."""\n\n'
            f"LAYERS = {pprint.pformat(cfg['LAYERS'], sort_dicts=False, width=100)}\n\n"
            f"HYPER = {pprint.pformat(cfg['HYPER'], sort_dicts=False, width=100)}\n")
    atomic_write(path, text)


# --------------------------------------------------------------------------
# The experiments: rows and how their results are summarized

VARIANTS = {       # name -> (edits, what it is)
    "relu": ([], "ReLU (the base config)"),
    "tanh": ([tanh], "tanh in place of every ReLU"),
    "lrn": ([], "with LRN (the base config)"),
    "no-lrn": ([no_lrn], "without LRN"),
    "base": ([], "the base config: 3x3/2 pooling, no dropout, PCA lighting on"),
    "pool-2x2": ([non_overlapping_pools], "non-overlapping 2x2/2 pooling"),
    "dropout": ([dropout], "dropout 0.5 before the output layer"),
    "no-lighting": ([no_lighting], "PCA lighting off"),
    "fp32": ([], "float32 conv and fc products (the base config)"),
    "tf32": ([], "conv and fc inputs rounded to TF32 (--precision tf32)"),
    "bf16": ([], "conv and fc inputs rounded to bfloat16 (--precision bf16)"),
}
PRECISION_OF = {"tf32": "tf32", "bf16": "bf16"}      # variant -> convnet.train --precision (else fp32)

EXPERIMENTS = {
    "relu-vs-tanh": {"variants": ["relu", "tanh"], "seeds": [0], "lr_schedule": "constant",
                     "about": "Figure 1: training error per epoch with ReLU and with tanh, same net otherwise"},
    "lrn": {"variants": ["lrn", "no-lrn"], "seeds": [0], "lr_schedule": "step",
            "about": "Section 3.3: test error of the four-layer net with and without LRN, same seeds"},
    "ablations": {"variants": ["base", "pool-2x2", "dropout", "no-lighting"], "seeds": [0, 1],
                  "lr_schedule": "step",
                  "about": "overlapping pooling, dropout and PCA lighting, each against the base config"},
    "ten-crop": {"variants": ["base"], "seeds": [0], "lr_schedule": "step",
                 "about": "centre-crop against ten-crop test error of one trained model"},
    "precision": {"variants": ["fp32", "tf32", "bf16"], "seeds": [0, 1], "lr_schedule": "step",
                  "about": "test error of the four-layer net trained with fp32, tf32 and bf16 products"},
}

PAPER = {        # what the paper reports, for the tables (its scale: all of CIFAR-10 or ImageNet)
    "relu-vs-tanh": "The paper (Figure 1, full CIFAR-10): the ReLU net reaches 25% training error six times "
                    "faster than the tanh net.",
    "lrn": "The paper (Section 3.3, full CIFAR-10): 13% test error without normalization, 11% with.",
    "ablations": "The paper (ImageNet): overlapping pooling lowers top-1 error by 0.4 points, PCA lighting by "
                 "over 1 point; without dropout (on its fc layers) the net overfits substantially, with it "
                 "it takes about twice the iterations to converge.",
    "ten-crop": "The paper (ImageNet) averages ten crops at test time; it reports no centre-only figure.",
    "precision": "The paper trains in float32 only. The target here is ours (the tensor-core issue): tf32 "
                 "and bf16 within 0.3 points of fp32's test error.",
}

# The scale of a run: paper-like by default; --quick: a few seconds on synthetic data.
FULL = {"epochs": 30, "train_limit": None, "test_limit": None, "train_eval": 10000, "batch_size": 128}
QUICK = {"epochs": 3, "train_limit": None, "test_limit": None, "train_eval": 64, "batch_size": 16}
TARGET_TRAIN_ERROR = 0.25          # Figure 1's threshold
TRAIN_VAL_IMAGES = 512             # what convnet.train validates on after each epoch (its log)


# --------------------------------------------------------------------------
# Files

def atomic_write(path, text):
    """Writes text to path via a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e}); delete it to redo that row") from None


# --------------------------------------------------------------------------
# Synthetic data for --quick

QUICK_CLASSES = ["red", "green", "blue", "stripes"]
QUICK_SIZE, QUICK_CROP = 16, 12


def make_synthetic(folder, per_class=32, test_per_class=8, size=QUICK_SIZE, seed=0):
    """A tiny CIFAR-like folder tree (train/<class>/*.png, test/<class>/*.png) of
    noisy colour images whose class is a colour or a stripe pattern.
    Returns the folder (written once; kept when it is there)."""
    from PIL import Image
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for ci, name in enumerate(QUICK_CLASSES):
            d = os.path.join(folder, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(count):
                img = rng.normal(110, 40, (size, size, 3))
                if ci < 3:
                    img[..., ci] += 70
                else:
                    img[:, (np.arange(size) // 3) % 2 == 0, :] += 60
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(d, f"{i:04d}.png"))
    open(done, "w").close()
    return folder


# --------------------------------------------------------------------------
# Measuring a checkpoint (test mode, centre crops or ten crops)

def load_net(path):
    """(Net, config) of a checkpoint file, on the NumPy backend."""
    from convnet import checkpoint
    from convnet.net import Net
    state = checkpoint.load(path)
    net = Net(state["config"], seed=0)
    net.load_state_dict(state["net"])
    return net, state


def input_size(cfg):
    return next(int(L["shape"][1]) for L in cfg["LAYERS"] if L.get("type") == "data")


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(net, images, mean, crop, crops="center", batch_size=256):
    """float64 (N, classes): softmax outputs averaged over the views."""
    from convnet.data import eval_views
    out = []
    for i in range(0, len(images), batch_size):
        views = eval_views(np.asarray(images[i:i + batch_size]), crop, crops, mean)
        p = sum(softmax(np.asarray(net.forward(v, train=False), np.float64)) for v in views)
        out.append(p / len(views))
    return np.concatenate(out)


def errors(probs, labels):
    """(top-1 error, top-5 error) of softmax outputs against labels."""
    labels = np.asarray(labels)
    k = min(5, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    top1 = float(np.mean(top[:, 0] != labels))
    top5 = float(np.mean(~np.any(top == labels[:, None], axis=1)))
    return top1, top5


# --------------------------------------------------------------------------
# Running one row

class Row:
    """One variant and seed: trained by convnet.train an epoch at a time, measured after each."""

    def __init__(self, exp, variant, seed, settings, runs_dir, out_dir):
        self.exp, self.variant, self.seed, self.s = exp, variant, seed, settings
        self.name = f"{variant}-s{seed}"
        self.run_dir = os.path.join(runs_dir, self.name)
        self.result_path = os.path.join(out_dir, "rows", self.name + ".json")
        self.progress_path = os.path.join(self.run_dir, "progress.json")
        self.config_path = os.path.join(self.run_dir, "config.py")

    def done(self):
        return read_json(self.result_path)

    def train_args(self, epochs):
        s = self.s
        last = os.path.join(self.run_dir, "last.ckpt")
        common = ["--epochs", str(epochs), "--device", s["device"], "--no-progress",
                  "--checkpoint-dir", self.run_dir]
        if os.path.exists(last):
            return ["--resume", last] + common
        args = ["--config", self.config_path, "--data", s["data"], "--seed", str(self.seed),
                "--batch-size", str(s["batch_size"]), "--lr-schedule", s["lr_schedule"],
                "--precision", PRECISION_OF.get(self.variant, "fp32")] + common
        if s["lr_schedule"] == "step":
            args += ["--lr-steps", ",".join(map(str, s["lr_steps"]))]
        if s["train_limit"]:
            args += ["--train-limit", str(s["train_limit"])]
        # train's own validation only feeds its log (the schedule here is step or constant);
        # the tables' test errors are measured by Row.measure on --test-limit images
        args += ["--val-limit", str(min(TRAIN_VAL_IMAGES, s["test_limit"] or TRAIN_VAL_IMAGES))]
        return args

    def run(self, data, say):
        """Trains and measures the remaining epochs; returns the row's result dict."""
        from convnet import checkpoint, train
        os.makedirs(self.run_dir, exist_ok=True)
        edits, about = VARIANTS[self.variant]
        if self.s.get("without_lrn"):
            edits, about = edits + [no_lrn], about + ", every LRN layer removed (--without-lrn)"
        if not os.path.exists(self.config_path):
            write_config(make_config(edits, self.s["quick"]), self.config_path,
                         f"{self.exp}, row {self.name}: {about}.")
        progress = read_json(self.progress_path) or {"epochs": [], "device": None}
        lines = []

        def out(line):
            lines.append(str(line))
            if str(line).startswith("training '"):
                progress["device"] = str(line).split(" on ")[-1].split(",")[0]
            if str(line).startswith("epoch "):
                say(f"  [{self.name}] {line}")

        last = os.path.join(self.run_dir, "last.ckpt")
        for e in range(1, self.s["epochs"] + 1):
            if any(r["epoch"] == e for r in progress["epochs"]):
                continue
            state = checkpoint.load(last) if os.path.exists(last) else None
            trained = state is not None and state["epoch"] >= e and not state.get("step_in_epoch")
            if not trained:
                rc = train.main(self.train_args(e), out=out)
                with open(os.path.join(self.run_dir, "train.out"), "a") as f:
                    f.write("\n".join(lines) + "\n")
                lines.clear()
                if rc == EXIT_INTERRUPTED:
                    raise KeyboardInterrupt
                if rc != 0:
                    raise RuntimeError(f"row {self.name}: python -m convnet.train {' '.join(self.train_args(e))} "
                                       f"failed (exit {rc}); see its message above")
                state = checkpoint.load(last)
            if state["epoch"] != e:
                raise RuntimeError(f"row {self.name}: {last} holds epoch {state['epoch']}, expected {e}")
            progress["epochs"].append(self.measure(state, data, e))
            write_json(self.progress_path, progress)
        result = {"row": self.name, "variant": self.variant, "about": VARIANTS[self.variant][1],
                  "seed": self.seed, "device": progress["device"], "config": os.path.relpath(self.config_path),
                  "checkpoint": os.path.relpath(last), "epochs": progress["epochs"]}
        write_json(self.result_path, result)
        return result

    def measure(self, state, data, epoch):
        from convnet.net import Net
        precision = state.get("run", {}).get("precision", "fp32")      # measured as it was trained
        net = Net(state["config"], seed=0, precision=precision)
        net.load_state_dict(state["net"])
        crop = input_size(state["config"])
        t0 = time.perf_counter()
        train_top1, _ = errors(predict(net, data["train_images"], data["mean"], crop), data["train_labels"])
        test_top1, test_top5 = errors(predict(net, data["test_images"], data["mean"], crop), data["test_labels"])
        m = state["metrics"][-1]
        seconds = sum(r["train_seconds"] + r["val_seconds"] for r in state["metrics"])
        return {"epoch": epoch, "precision": precision, "train_error": train_top1, "test_top1": test_top1, "test_top5": test_top5,
                "train_loss": m["train_loss"], "lr": m["lr"], "train_seconds": sum(r["train_seconds"]
                                                                                  for r in state["metrics"]),
                "seconds": seconds, "measure_seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------
# Summaries: tables and plots

def first_reach(epochs, key, target):
    """(epoch, training seconds) of the first epoch whose `key` is <= target, or (None, None)."""
    for r in epochs:
        if r[key] <= target:
            return r["epoch"], r["train_seconds"]
    return None, None


def mean_spread(values):
    v = np.asarray(values, np.float64)
    if len(v) == 1:
        return f"{100 * v[0]:.2f}%"
    return f"{100 * v.mean():.2f}% (min {100 * v.min():.2f}, max {100 * v.max():.2f}, n={len(v)})"


def plot_curves(rows, key, ylabel, path, title, target=None, xkey="epoch", xlabel="epoch"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for r in rows:
        xs = [e[xkey] for e in r["epochs"]]
        ax.plot(xs, [100 * e[key] for e in r["epochs"]], marker="o", ms=3,
                ls="-" if r["variant"] in ("relu", "lrn", "base") else "--", label=r["row"])
    if target is not None:
        ax.axhline(100 * target, color="grey", lw=0.8, ls=":", label=f"{100 * target:.0f}%")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + " (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return os.path.basename(path)


THRESHOLDS = (0.7, 0.6, 0.5, 0.4, 0.3)   # also reported: a short run may reach these and not 25%


def summarize_relu_vs_tanh(rows, s, out_dir):
    target = s["target"]
    lines = ["| row | epochs to {:.0f}% train error | training seconds to it | final train error | "
             "final test top-1 |".format(100 * target), "|---|---|---|---|---|"]
    for r in rows:
        e, sec = first_reach(r["epochs"], "train_error", target)
        last = r["epochs"][-1]
        lines.append(f"| {r['row']} | {e if e else 'not reached in ' + str(last['epoch'])} | "
                     f"{f'{sec:.0f}' if sec else '-'} | {100 * last['train_error']:.2f}% | "
                     f"{100 * last['test_top1']:.2f}% |")
    verdict = []
    lines += ["", "| epoch | " + " | ".join(f"{r['row']} train error | {r['row']} training s" for r in rows) + " |",
              "|---|" + "---|---|" * len(rows)]
    for e in range(max(len(r["epochs"]) for r in rows)):
        cells = []
        for r in rows:
            x = r["epochs"][e] if e < len(r["epochs"]) else None
            cells += [f"{100 * x['train_error']:.1f}%" if x else "-", f"{x['train_seconds']:.0f}" if x else "-"]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    lines += ["", "| training error reached | seed | ReLU: epoch (s) | tanh: epoch (s) | tanh / ReLU, epochs | "
              "tanh / ReLU, seconds |", "|---|---|---|---|---|---|"]
    for seed in s["seeds"]:
        by = {r["variant"]: r for r in rows if r["seed"] == seed}
        relu, tanh_ = by.get("relu"), by.get("tanh")
        if not (relu and tanh_):
            continue
        for t in sorted(set(THRESHOLDS) | {target}, reverse=True):
            er, sr = first_reach(relu["epochs"], "train_error", t)
            et, st = first_reach(tanh_["epochs"], "train_error", t)
            n = tanh_["epochs"][-1]["epoch"]
            if er and et:
                ratio, sratio = f"{et / er:.2f}", f"{st / sr:.2f}"
            elif er:
                ratio, sratio = f"> {n / er:.2f} (tanh not there in {n})", "-"
            else:
                ratio, sratio = "- (ReLU not there)", "-"
            lines.append(f"| {100 * t:.0f}% | {seed} | {f'{er} ({sr:.0f})' if er else '-'} | "
                         f"{f'{et} ({st:.0f})' if et else '-'} | {ratio} | {sratio} |")
            if t == target:
                if er and et:
                    verdict.append(f"Seed {seed}: tanh needs {et / er:.2f}x the epochs and {st / sr:.2f}x the "
                                   f"training seconds of ReLU to reach {100 * t:.0f}% training error "
                                   "(paper: about 6x).")
                elif er:
                    verdict.append(f"Seed {seed}: ReLU reached {100 * t:.0f}% training error after {er} epochs, "
                                   f"tanh had not after {n}: the ratio is more than {n / er:.1f}x in epochs "
                                   "(paper: about 6x); this run cannot say how much more.")
                else:
                    verdict.append(f"Seed {seed}: ReLU did not reach {100 * t:.0f}% training error in {n} epochs: "
                                   "this scale cannot measure the paper's ratio at its threshold; the rows "
                                   "above give it at the thresholds this run did reach.")
    plots = [plot_curves(rows, "train_error", "training error", os.path.join(out_dir, "train_error.png"),
                         "training error (centre crops of a fixed training subset)", target),
             plot_curves(rows, "train_error", "training error", os.path.join(out_dir, "train_error_seconds.png"),
                         "training error against training seconds", target, "train_seconds",
                         "training seconds")]
    return lines, verdict, plots


def summarize_by_variant(rows, s, out_dir, base):
    """Test error per variant (mean and spread over seeds), each against the base."""
    variants = [v for v in EXPERIMENTS[s["experiment"]]["variants"] if any(r["variant"] == v for r in rows)]
    finals = {v: [r["epochs"][-1]["test_top1"] for r in rows if r["variant"] == v] for v in variants}
    finals5 = {v: [r["epochs"][-1]["test_top5"] for r in rows if r["variant"] == v] for v in variants}
    trains = {v: [r["epochs"][-1]["train_error"] for r in rows if r["variant"] == v] for v in variants}
    lines = ["| variant | what | seeds | final test top-1 | final test top-5 | final train error | "
             f"top-1 minus {base}'s |", "|---|---|---|---|---|---|---|"]
    spreads = []
    for v in variants:
        seeds = [r["seed"] for r in rows if r["variant"] == v]
        diff = "-" if v == base else (f"{100 * (np.mean(finals[v]) - np.mean(finals[base])):+.2f} points"
                                      if base in finals else "-")
        spreads.append(max(finals[v]) - min(finals[v]) if len(finals[v]) > 1 else None)
        lines.append(f"| {v} | {VARIANTS[v][1]} | {','.join(map(str, seeds))} | {mean_spread(finals[v])} | "
                     f"{mean_spread(finals5[v])} | {mean_spread(trains[v])} | {diff} |")
    verdict = []
    known = [x for x in spreads if x is not None]
    for v in variants:
        if v == base or base not in finals:
            continue
        d = abs(np.mean(finals[v]) - np.mean(finals[base]))
        if known:
            spread = max(known)
            verdict.append(f"{v}: the difference ({100 * d:.2f} points) is "
                           f"{'within' if d <= spread else 'larger than'} the largest seed-to-seed spread "
                           f"measured here ({100 * spread:.2f} points).")
        else:
            verdict.append(f"{v}: one seed per variant, so the {100 * d:.2f}-point difference has no measured "
                           "spread to be judged against.")
    plots = [plot_curves(rows, "test_top1", "test top-1 error", os.path.join(out_dir, "test_error.png"),
                         "test top-1 error (centre crop) per epoch"),
             plot_curves(rows, "train_error", "training error", os.path.join(out_dir, "train_error.png"),
                         "training error (centre crops of a fixed training subset)")]
    return lines, verdict, plots


def summarize_ten_crop(rows, s, out_dir, data):
    """Centre against ten crops, on the test images, for each trained row (or --checkpoint)."""
    lines = ["| model | test images | centre top-1 | ten-crop top-1 | centre top-5 | ten-crop top-5 |",
             "|---|---|---|---|---|---|"]
    models = [(r["row"], r["checkpoint"]) for r in rows] if rows else []
    if s.get("checkpoint"):
        models = [(os.path.relpath(c), c) for c in s["checkpoint"]]
    results = []
    for name, path in models:
        net, state = load_net(path)
        crop = input_size(state["config"])
        res = {"model": name}
        for crops in ("center", "ten"):
            res[crops] = errors(predict(net, data["test_images"], data["mean"], crop, crops), data["test_labels"])
        results.append(res)
        lines.append(f"| {name} | {len(data['test_labels'])} | {100 * res['center'][0]:.2f}% | "
                     f"{100 * res['ten'][0]:.2f}% | {100 * res['center'][1]:.2f}% | {100 * res['ten'][1]:.2f}% |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    xs = np.arange(len(results))
    ax.bar(xs - 0.2, [100 * r["center"][0] for r in results], 0.4, label="centre crop")
    ax.bar(xs + 0.2, [100 * r["ten"][0] for r in results], 0.4, label="ten crops")
    ax.set_xticks(xs, [r["model"] for r in results], fontsize=7)
    ax.set_ylabel("test top-1 error (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "ten_crop.png"))
    plt.close(fig)
    verdict = [f"{r['model']}: ten crops {'lower' if r['ten'][0] < r['center'][0] else 'do not lower'} "
               f"the top-1 error ({100 * (r['ten'][0] - r['center'][0]):+.2f} points)." for r in results]
    return lines, verdict, ["ten_crop.png"], results


# --------------------------------------------------------------------------
# The command

def build_parser():
    import argparse
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(EXPERIMENTS), help="which experiment")
    p.add_argument("--quick", action="store_true", help="tiny synthetic data and net: seconds, for CI")
    p.add_argument("--out", help="results folder (default docs/results/NAME)")
    p.add_argument("--runs", help="checkpoints and logs of the rows (default runs/experiments/NAME)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in the same folders")
    p.add_argument("--data", help="dataset (default cifar10; --quick: synthetic)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "emu", "cuda"])
    p.add_argument("--epochs", type=int, help="epochs per row")
    p.add_argument("--train-limit", type=int, help="train on the first N training images")
    p.add_argument("--test-limit", type=int, help="measure test error on the first N test images")
    p.add_argument("--train-eval", type=int, help="training images that the training error is measured on")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--variants", help="comma-separated subset of the experiment's rows")
    p.add_argument("--lr-steps", help="epochs after which the lr is divided by 10 (default: 80%% of --epochs)")
    p.add_argument("--target", type=float, default=TARGET_TRAIN_ERROR,
                   help="relu-vs-tanh: the training error to reach (default 0.25)")
    p.add_argument("--checkpoint", action="append",
                   help="ten-crop: measure this checkpoint instead of training one (repeat for several)")
    p.add_argument("--without-lrn", action="store_true",
                   help="every row's net without its LRN layers (e.g. relu-vs-tanh as a plain net)")
    p.add_argument("--note", help="a line for table.md (e.g. why the scale is what it is)")
    return p


def _ints(text, what):
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


def resolve(args, argv):
    exp = EXPERIMENTS[args.name]
    s = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "train_limit", "test_limit", "train_eval", "batch_size"):
        v = getattr(args, key)
        if v is not None:
            if v < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {v}")
            s[key] = v
    s.update(experiment=args.name, quick=args.quick, device=args.device, target=args.target,
             lr_schedule=exp["lr_schedule"], checkpoint=args.checkpoint, note=args.note,
             without_lrn=args.without_lrn)
    s["seeds"] = _ints(args.seeds, "--seeds") if args.seeds else list(exp["seeds"])
    if args.quick and not args.seeds:
        s["seeds"] = s["seeds"][:1]
    variants = args.variants.split(",") if args.variants else list(exp["variants"])
    bad = [v for v in variants if v not in exp["variants"]]
    if bad:
        raise UsageError(f"--variants: {args.name} has no row {bad[0]!r}; choose from {', '.join(exp['variants'])}")
    s["variants"] = variants
    if args.lr_steps:
        s["lr_steps"] = _ints(args.lr_steps, "--lr-steps")
    else:
        s["lr_steps"] = [max(1, int(round(0.8 * s["epochs"])))]
        if s["lr_steps"][0] >= s["epochs"]:
            s["lr_schedule"] = "constant"
    if args.without_lrn and args.name in ("lrn", "ten-crop"):
        raise UsageError(f"--without-lrn does not apply to {args.name}")
    if args.checkpoint and args.name != "ten-crop":
        raise UsageError("--checkpoint is for ten-crop only")
    for c in args.checkpoint or []:
        if not os.path.isfile(c):
            raise UsageError(f"--checkpoint {c}: no such file")
    out = args.out or os.path.join("docs", "results", args.name)
    runs = args.runs or os.path.join("runs", "experiments", args.name + ("-quick" if args.quick else ""))
    if args.quick:
        s["data"] = args.data or os.path.join(runs, "synthetic-data")
    else:
        s["data"] = args.data or "cifar10"
    s["command"] = "python -m convnet.experiment " + " ".join(argv)
    return s, out, runs


def load_measure_data(s):
    """The images rows are measured on: a fixed training subset and the test images."""
    from convnet.data import load_dataset
    train = load_dataset(s["data"], "train")
    test = load_dataset(s["data"], "test")
    n_train = min(len(train), s["train_limit"] or len(train))
    k = min(n_train, s["train_eval"])
    n_test = min(len(test), s["test_limit"] or len(test))
    return {"train_images": np.asarray(train.images[:k]), "train_labels": np.asarray(train.labels[:k]),
            "test_images": np.asarray(test.images[:n_test]), "test_labels": np.asarray(test.labels[:n_test]),
            "mean": train.mean, "classes": train.classes, "n_train": n_train}


def environment():
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "processor": platform.processor() or None, "cpus": os.cpu_count(), "host": platform.node()}


def commit(env):
    return f"commit {env.get('commit') or '?'}{', with local changes' if env.get('dirty') else ''}"


def write_table(s, out_dir, rows, lines, verdict, plots, started, wall):
    scale = (f"{s['data']}, {s['n_train']} training images{' (--train-limit)' if s['train_limit'] else ''}, "
             f"{s['n_test']} test images, {s['epochs']} epochs per row, batch {s['batch_size']}, "
             f"lr schedule {s['lr_schedule']}{' ' + str(s['lr_steps']) if s['lr_schedule'] == 'step' else ''}, "
             f"seeds {','.join(map(str, s['seeds']))}; "
             f"{'every net without its LRN layers (--without-lrn); ' if s.get('without_lrn') else ''}"
             f"training error measured on the first "
             f"{s['n_train_eval']} training images (centre crops, test mode)")
    if s.get("checkpoint"):
        scale = (f"{s['data']}, the first {s['n_test']} test images; the models: {', '.join(s['checkpoint'])} "
                 "(their own scale is in the table.md of the experiment that trained them)")
    devices = sorted({r.get("device") or "?" for r in rows}) or ["numpy (this command's own evaluation)"]
    text = [f"# {s['experiment']}: {EXPERIMENTS[s['experiment']]['about']}", "",
            f"Made by `{s['command']}` ({commit(s['env_first'])}"
            f"{'' if commit(s['env_first']) == commit(s['env']) else '; this table written at ' + commit(s['env'])}), "
            f"finished {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
            f"Scale: {scale}.", "",
            f"Device: {', '.join(devices)} ({s['env']['cpus']} CPUs seen by the process); wall time of this "
            f"command {wall:.0f} s (all runs of it, including resumed ones: {s['wall_total']:.0f} s).", ""]
    if s.get("quick"):
        text += ["**--quick**: synthetic data and a quarter-width net; these numbers prove the machinery "
                 "works and measure nothing about the paper.", ""]
    if s.get("note"):
        text += [s["note"], ""]
    text += lines + [""] + verdict + ["", PAPER[s["experiment"]], ""] + [f"![{p}]({p})" for p in plots] + [""]
    text += ["Per-epoch numbers of every row: `rows/ROW.json`; its network: `rows/ROW.config.py`; "
             "settings: `settings.json`.", ""]
    atomic_write(os.path.join(out_dir, "table.md"), "\n".join(text))


def run_experiment(s, out_dir, runs_dir, resume, say=print):
    started = time.time()
    settings_path = os.path.join(out_dir, "settings.json")
    old = read_json(settings_path)
    if old and not resume:
        raise UsageError(f"{out_dir} holds a run already: add --resume to continue it, or choose another --out")
    if old and resume:
        for key in ("epochs", "train_limit", "test_limit", "train_eval", "batch_size", "data", "lr_schedule",
                    "lr_steps", "quick"):
            if old.get(key) != s.get(key):
                raise UsageError(f"--resume: {key} {s.get(key)!r} differs from the stopped run's {old.get(key)!r}")
    before = (old or {}).get("wall_total", 0.0)       # seconds spent by earlier, stopped runs
    s["wall_total"] = before
    s["env"] = environment()
    s["env_first"] = (old or {}).get("env_first") or (old or {}).get("env") or s["env"]   # the rows' first run
    s["started"] = (old or {}).get("started") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    os.makedirs(out_dir, exist_ok=True)
    write_json(settings_path, s)
    if s["quick"]:
        make_synthetic(s["data"])
    data = load_measure_data(s)
    s["n_test"], s["n_train_eval"], s["n_train"] = (len(data["test_labels"]), len(data["train_labels"]),
                                                    data["n_train"])
    rows = []
    plan = [] if s.get("checkpoint") else [(v, seed) for v in s["variants"] for seed in s["seeds"]]
    from tqdm import tqdm
    bar = tqdm(total=len(plan), desc=s["experiment"], unit="row", file=sys.stderr, disable=None)
    try:
        for variant, seed in plan:
            row = Row(s["experiment"], variant, seed, s, runs_dir, out_dir)
            result = row.done()
            if result is None:
                say(f"{PROG}: row {row.name} ({VARIANTS[variant][1]}), {s['epochs']} epochs")
                result = row.run(data, say)
            rows.append(result)
            kept = os.path.join(out_dir, "rows", row.name + ".config.py")      # the variant, beside its numbers
            if os.path.exists(row.config_path) and not os.path.exists(kept):
                with open(row.config_path) as f:
                    atomic_write(kept, f.read())
            bar.update(1)
    finally:
        bar.close()
        s["wall_total"] = before + time.time() - started
        write_json(settings_path, s)
    name = s["experiment"]
    extra = {}
    if name == "relu-vs-tanh":
        lines, verdict, plots = summarize_relu_vs_tanh(rows, s, out_dir)
    elif name == "ten-crop":
        lines, verdict, plots, extra["ten_crop"] = summarize_ten_crop(rows, s, out_dir, data)
    else:
        lines, verdict, plots = summarize_by_variant(rows, s, out_dir, EXPERIMENTS[name]["variants"][0])
    wall = time.time() - started
    s["wall_total"] = before + wall
    s["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    s.update(extra)
    write_json(settings_path, s)
    write_table(s, out_dir, rows, lines, verdict, plots, started, wall)
    return rows


def main(argv=None, say=print):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        s, out_dir, runs_dir = resolve(args, argv)
        run_experiment(s, out_dir, runs_dir, args.resume, say)
    except SystemExit as e:             # argparse: usage message already printed
        return int(e.code or 0)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except cli.user_errors() as e:      # bad data, config or checkpoint: one line, as in convnet.train
        return cli.report(PROG, e, EXIT_USAGE)
    except OSError as e:
        return cli.report(PROG, cli.describe_os_error(e), cli.os_error_code(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished rows are kept: run the same command with --resume "
              "to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILED
    out = args.out or os.path.join("docs", "results", args.name)
    say(f"{PROG}: results in {os.path.join(out, 'table.md')}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
