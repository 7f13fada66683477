"""Pictures of a run: `python -m convnet.show WHAT ...` (PNG files, matplotlib's Agg backend).

    python -m convnet.show curves runs/fashion               # or the run's log.jsonl
    python -m convnet.show filters runs/alexnet/best.ckpt     # first-layer filters, per column
    python -m convnet.show predictions runs/fashion/best.ckpt # top-5 bars beside test images
    python -m convnet.show neighbours runs/fashion/best.ckpt  # nearest training images (Figure 4)

- curves: loss, top-1 and top-5 validation error and the learning rate,
  against epoch (step losses too) and against training wall time (the
  seconds the run spent training and validating, summed over its epochs, so
  time between a stop and a resume is not counted).
- filters: the weights of every conv layer that reads the data layer, one
  grid per layer, side by side (a two-column net shows each column's
  filters, as the paper's Figure 3 showed each GPU's); each grid is scaled
  by its largest absolute weight, 0 is mid-grey.
- predictions: a few test images, each beside bars of its five most likely
  classes (the true class in red: the paper's Figure 4, left).
- neighbours: for a few test images, the training images whose vectors in
  the last hidden layer (the input of the output layer, in test mode) are
  nearest in Euclidean distance (Figure 4, right).

Each writes one PNG (--out, default next to the log or checkpoint) and prints
its path. Errors (a missing file, a log without epochs): one line, exit 2.
"""
import argparse
import json
import os
import sys

import numpy as np

from convnet import cli

PROG = "convnet.show"


class UsageError(Exception):
    pass


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# --------------------------------------------------------------------------
# curves

def read_log(path):
    """(epoch records, step records) of a log.jsonl; the last record of each epoch/step wins
    (a resumed run may have logged an epoch twice)."""
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such log (give a run folder or its log.jsonl)")
    epochs, steps = {}, {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}:{n}: not a JSON line") from None
            if r.get("type") == "epoch":
                epochs[int(r["epoch"])] = r
            elif r.get("type") == "step":
                steps[int(r["step"])] = r
    if not epochs:
        raise UsageError(f"{path}: no epoch records yet (the first epoch writes one when it ends)")
    return [epochs[k] for k in sorted(epochs)], [steps[k] for k in sorted(steps)]


def batches_per_epoch(steps):
    """Batches in one epoch, from the step records (step = (epoch - 1) * batches + batch)."""
    for r in steps:
        if r["epoch"] > 1:
            return (r["step"] - r["batch"]) / (r["epoch"] - 1)
    return max([r["batch"] for r in steps] or [1])


def curves(log, out):
    epochs, steps = read_log(log)
    plt = _plt()
    ep = np.array([r["epoch"] for r in epochs], float)
    secs = np.cumsum([r.get("train_seconds", 0.0) + r.get("val_seconds", 0.0) for r in epochs])
    loss = [r["train_loss"] for r in epochs]
    top1 = [100 * r["val_top1"] for r in epochs]
    top5 = [100 * r["val_top5"] for r in epochs]
    lr = [r["lr"] for r in epochs]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=100)
    for row, (x, xlabel) in enumerate(((ep, "epoch"), (secs, "training wall time (s)"))):
        a_loss, a_err, a_lr = axes[row]
        if row == 0 and steps:
            nb = batches_per_epoch(steps)
            a_loss.plot([r["epoch"] - 1 + r["batch"] / nb for r in steps], [r["loss"] for r in steps],
                        color="tab:blue", alpha=0.35, lw=0.8, label="step loss")
        a_loss.plot(x, loss, "o-", color="tab:blue", ms=3, label="epoch mean loss")
        a_loss.set_ylabel("training loss")
        a_err.plot(x, top1, "o-", ms=3, label="top-1")
        a_err.plot(x, top5, "s-", ms=3, label="top-5")
        a_err.set_ylabel("validation error (%)")
        a_lr.step(x, lr, where="post", color="tab:green")
        a_lr.plot(x, lr, "o", ms=3, color="tab:green")
        a_lr.set_yscale("log")
        a_lr.set_ylabel("learning rate (at epoch end)")
        for a in (a_loss, a_err, a_lr):
            a.set_xlabel(xlabel)
            a.grid(alpha=0.3)
        a_loss.legend(fontsize=8)
        a_err.legend(fontsize=8)
    fig.suptitle(f"{os.path.relpath(log)}: {len(epochs)} epochs, best top-1 {min(top1):.2f}%", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------
# filters

def load_checkpoint(path):
    from convnet import checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "last.ckpt")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such checkpoint")
    state = checkpoint.load(path)
    if not isinstance(state.get("config"), dict) or "net" not in state:
        raise UsageError(f"{path}: not a training checkpoint (no config or weights)")
    return state


def first_layers(cfg):
    """Names of the conv layers that read the data layer, by column."""
    data = next(L["name"] for L in cfg["LAYERS"] if L.get("type") == "data")
    found = []
    for L in cfg["LAYERS"]:
        ins = L.get("inputs")
        ins = ins if isinstance(ins, list) else [ins]
        if L.get("type") == "conv" and data in ins:
            found.append((L.get("column", 0), L["name"]))
    return [name for _, name in sorted(found)]


def filter_grid(w, cols=None):
    """(F, C, k, k) weights -> an image (rows*(k+1)-1, cols*(k+1)-1, 3) in [0, 1], one tile per
    filter, 0 at mid-grey, scaled by the largest absolute weight; white gaps."""
    w = np.asarray(w, np.float64)
    f, c, k, _ = w.shape
    if c != 3:
        w = w.mean(axis=1, keepdims=True).repeat(3, axis=1)   # grey (or many channels: their mean)
    cols = cols or int(np.ceil(np.sqrt(f)))
    rows = int(np.ceil(f / cols))
    img = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, 3))
    scale = np.abs(w).max() or 1.0
    for i in range(f):
        r, q = divmod(i, cols)
        img[r * (k + 1):r * (k + 1) + k, q * (k + 1):q * (k + 1) + k] = \
            0.5 + 0.5 * w[i].transpose(1, 2, 0) / scale
    return np.clip(img, 0, 1)


def filters(ckpt, out, layer=None):
    state = load_checkpoint(ckpt)
    names = [layer] if layer else first_layers(state["config"])
    if not names:
        raise UsageError(f"{ckpt}: no conv layer reads the data layer")
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5.4), dpi=100, squeeze=False)
    for a, name in zip(axes[0], names):
        w = state["net"].get(name + ".w")
        if w is None or np.ndim(w) != 4:
            raise UsageError(f"{ckpt}: no conv weights '{name}.w'")
        a.imshow(filter_grid(w), interpolation="nearest")
        a.set_title(f"{name}: {w.shape[0]} filters {w.shape[2]}x{w.shape[3]}x{w.shape[1]}", fontsize=10)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------
# predictions and neighbours

def _net(state, upto=None):
    """The checkpoint's net, or with upto=LAYER a net that ends at that layer (its weights only)."""
    from convnet.net import Net
    cfg = state["config"]
    if upto is not None:
        keep, stack = set(), [upto]
        by = {L["name"]: L for L in cfg["LAYERS"]}
        while stack:
            n = stack.pop()
            if n not in keep:
                keep.add(n)
                ins = by[n].get("inputs")
                stack.extend([] if ins is None else ins if isinstance(ins, list) else [ins])
        hyper = {k: v for k, v in cfg.get("HYPER", {}).items() if k != "layers"}   # init: weights are loaded
        cfg = dict(cfg, LAYERS=[L for L in cfg["LAYERS"] if L["name"] in keep], HYPER=hyper)
    net = Net(cfg, seed=0)
    names = {p.name for p in net.params()}
    net.load_state_dict({k: v for k, v in state["net"].items() if k in names})
    return net


def _data(state, data, split):
    from convnet.data import load_dataset
    name = data or (state.get("run") or {}).get("data") or "fashion-mnist"
    return load_dataset(name, split), load_dataset(name, "train")


def _views(ds_images, mean, crop):
    from convnet.data import eval_views
    return eval_views(np.asarray(ds_images), crop, "center", mean)[0]


def _crop(state):
    return next(int(L["shape"][1]) for L in state["config"]["LAYERS"] if L.get("type") == "data")


def _show_image(a, img, crop=None):
    img = np.asarray(img)
    if crop is not None and img.shape[0] > crop:
        o = (img.shape[0] - crop) // 2
        img = img[o:o + crop, o:o + crop]
    if img.shape[-1] == 1:
        a.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        a.imshow(img, interpolation="nearest")
    a.set_xticks([])
    a.set_yticks([])


def _pick(n_images, count, seed):
    return np.sort(np.random.default_rng(seed).choice(n_images, size=min(count, n_images), replace=False))


def predictions(ckpt, out, data=None, split="test", count=8, seed=0):
    from convnet.experiment import softmax
    state = load_checkpoint(ckpt)
    ds, train = _data(state, data, split)
    crop = _crop(state)
    idx = _pick(len(ds), count, seed)
    net = _net(state)
    probs = softmax(np.asarray(net.forward(_views(ds.images[idx], train.mean, crop), train=False), np.float64))
    plt = _plt()
    cols = min(4, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(3.2 * cols, 1.9 * rows), dpi=100,
                             gridspec_kw={"width_ratios": [1, 1.4] * cols}, squeeze=False)
    k = min(5, probs.shape[1])
    for j, i in enumerate(idx):
        a_img, a_bar = axes[j // cols][2 * (j % cols)], axes[j // cols][2 * (j % cols) + 1]
        _show_image(a_img, ds.images[i], crop)
        label = int(ds.labels[i])
        a_img.set_title(ds.classes[label], fontsize=8)
        top = np.argsort(-probs[j])[:k]
        colors = ["tab:red" if t == label else "tab:blue" for t in top]
        a_bar.barh(np.arange(k)[::-1], probs[j][top], color=colors)
        a_bar.set_xlim(0, 1)
        a_bar.set_yticks(np.arange(k)[::-1], [ds.classes[t] for t in top], fontsize=7)
        a_bar.tick_params(axis="x", labelsize=6)
    for j in range(len(idx), rows * cols):
        axes[j // cols][2 * (j % cols)].axis("off")
        axes[j // cols][2 * (j % cols) + 1].axis("off")
    fig.suptitle("top-5 predictions (true class in red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def last_hidden(cfg):
    """The layers whose outputs feed the output layer (the last hidden layer)."""
    loss = next((L for L in cfg["LAYERS"] if L.get("type") == "softmax_loss"), None)
    if loss is None:
        raise UsageError("the net has no softmax_loss layer to find its output layer from")
    by = {L["name"]: L for L in cfg["LAYERS"]}
    src = loss["inputs"]
    output = by[src[0] if isinstance(src, list) else src]
    ins = output.get("inputs")
    ins = ins if isinstance(ins, list) else [ins]
    # skip dropout: in test mode it is the identity, its input holds the same vector
    return [by[n]["inputs"] if by[n].get("type") == "dropout" else n for n in ins]


def features(state, images, mean, batch_size=256):
    """float32 (N, D): the last hidden layer's vectors (test mode), columns concatenated."""
    crop = _crop(state)
    nets = [_net(state, upto=name) for name in last_hidden(state["config"])]
    out = []
    for i in range(0, len(images), batch_size):
        x = _views(images[i:i + batch_size], mean, crop)
        out.append(np.concatenate([np.asarray(n.forward(x, train=False)).reshape(len(x), -1) for n in nets], 1))
    return np.concatenate(out).astype(np.float32)


def nearest(query, pool, k):
    """Indices (Q, k) of the k rows of pool nearest to each query row (Euclidean)."""
    d = (query ** 2).sum(1)[:, None] - 2 * query @ pool.T + (pool ** 2).sum(1)[None, :]
    return np.argsort(d, axis=1)[:, :k]


def neighbours(ckpt, out, data=None, split="test", count=5, k=6, train_limit=10000, seed=0):
    state = load_checkpoint(ckpt)
    ds, train = _data(state, data, split)
    crop = _crop(state)
    idx = _pick(len(ds), count, seed)
    n_train = min(len(train), train_limit)
    q = features(state, ds.images[idx], train.mean)
    pool = features(state, train.images[:n_train], train.mean)
    near = nearest(q.astype(np.float64), pool.astype(np.float64), k)
    plt = _plt()
    fig, axes = plt.subplots(len(idx), k + 1, figsize=(1.3 * (k + 1), 1.45 * len(idx)), dpi=100, squeeze=False)
    for r, i in enumerate(idx):
        _show_image(axes[r][0], ds.images[i], crop)
        axes[r][0].set_title(f"{split}: {ds.classes[int(ds.labels[i])]}", fontsize=7, color="tab:red")
        for c, j in enumerate(near[r], 1):
            _show_image(axes[r][c], train.images[j], crop)
            axes[r][c].set_title(train.classes[int(train.labels[j])], fontsize=7)
    fig.suptitle(f"nearest of {n_train} training images in the last hidden layer "
                 f"({'+'.join(last_hidden(state['config']))}, {q.shape[1]} values)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------
# The command

def build_parser():
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curves", help="training curves from a run's log.jsonl")
    c.add_argument("log", help="a run folder or its log.jsonl")
    f = sub.add_parser("filters", help="first-layer filters as image grids, per column")
    f.add_argument("checkpoint")
    f.add_argument("--layer", help="a conv layer (default: every conv layer reading the data)")
    for name, helptext in (("predictions", "top-5 predictions beside test images"),
                           ("neighbours", "nearest training images in the last hidden layer")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("checkpoint")
        s.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
        s.add_argument("--split", default="test", choices=["train", "val", "test"])
        s.add_argument("--count", type=int, default=8 if name == "predictions" else 5, help="images shown")
        s.add_argument("--seed", type=int, default=0, help="which images (a fixed random choice)")
        if name == "neighbours":
            s.add_argument("--k", type=int, default=6, help="neighbours per image")
            s.add_argument("--train-limit", type=int, default=10000,
                           help="search the first N training images (default 10000)")
    for s in sub.choices.values():
        s.add_argument("--out", help="PNG file to write")
    return p


def default_out(args):
    src = getattr(args, "log", None) or args.checkpoint
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    return os.path.join(folder, f"{args.what}.png")


def main(argv=None, out=print):
    args = build_parser().parse_args(argv)
    path = args.out or default_out(args)
    try:
        for key in ("count", "k", "train_limit"):
            if getattr(args, key, 1) < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be >= 1")
        if os.path.dirname(os.path.abspath(path)):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if args.what == "curves":
            curves(args.log, path)
        elif args.what == "filters":
            filters(args.checkpoint, path, args.layer)
        elif args.what == "predictions":
            predictions(args.checkpoint, path, args.data, args.split, args.count, args.seed)
        else:
            neighbours(args.checkpoint, path, args.data, args.split, args.count, args.k, args.train_limit,
                       args.seed)
    except cli.user_errors() as e:      # bad data, config or checkpoint: one line, as in convnet.train
        return cli.report(PROG, e, cli.EXIT_USAGE)
    except (UsageError, OSError, ValueError, KeyError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    out(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
