"""Top-1 / top-5 error of a checkpoint: `python -m convnet.evaluate CHECKPOINT [options]`.

    python -m convnet.evaluate runs/fashion/best.ckpt
    python -m convnet.evaluate runs/alexnet/best.ckpt --data imagenet/ --split val --crops ten

The network (config and weights) comes from the checkpoint; the data from
--data, else the dataset the checkpoint was trained on. Images are
normalised like the training loader (mean image of the train split
subtracted, / 255). When the images are larger than the net's input,
--crops center takes the central crop and --crops ten the paper's ten views
(four corners and the centre, and their reflections), averaging the ten
softmax outputs; when they are the net's size (28 x 28 Fashion-MNIST) it is
plain evaluation of the whole image. Errors: one line on stderr naming the
file and the problem (convnet/cli.py): exit 2 for bad input (a corrupt
checkpoint, data whose classes the checkpoint's net does not have), 1 for a
failing machine, 130 for Ctrl-C.
"""
if __name__ == "__main__":          # before the slow imports: Ctrl-C now is one line, exit 130
    from convnet import startup
    startup.guard("convnet.evaluate")

import numpy as np

from convnet import checkpoint, cli
from convnet.cli import UsageError
from convnet.precision import PRECISIONS

PROG = "convnet.evaluate"


def build_parser():
    p = cli.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint file (or a folder holding last.ckpt)")
    p.add_argument("--data", help="dataset name, folder or archive (default: the checkpoint's)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--crops", default="center", choices=["center", "ten"])
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "emu", "cuda"])
    p.add_argument("--gpus", type=cli.int_list, help="GPU ids, e.g. 0,1")
    p.add_argument("--limit", type=cli.positive_int, help="only the first N images")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="conv and fc products: fp32, tf32 or bf16 (default: the checkpoint's run, else fp32)")
    return p


def _to_host(a):
    from convnet.backend import to_host
    return to_host(a)


def predict(net, images, mean, crop, crops="center", batch_size=128):
    """float64 (N, classes): softmax outputs of net on uint8 (N, S, S, C) images,
    averaged over the views (1 for "center", 10 for "ten")."""
    from convnet import reference
    from convnet.data import eval_views
    out = []
    for i in range(0, len(images), batch_size):
        views = eval_views(np.asarray(images[i:i + batch_size]), crop, crops, mean)   # (V, B, C, crop, crop)
        probs = None
        for v in views:
            p = reference.softmax_forward(_to_host(net.forward(v, train=False)).astype(np.float64))
            probs = p if probs is None else probs + p
        out.append(probs / len(views))
    return np.concatenate(out)


def evaluate(net, images, labels, mean, crop, crops="center", batch_size=128):
    """(top-1 error, top-5 error) of net on uint8 (N, S, S, C) images (see predict)."""
    from convnet import reference
    labels = np.asarray(labels, np.int32)
    probs = predict(net, images, mean, crop, crops, batch_size)
    n = max(len(labels), 1)
    return (reference.topk_errors(probs, labels, 1) / n,
            reference.topk_errors(probs, labels, min(5, probs.shape[1])) / n)


def main(argv=None, out=print):
    return cli.run(PROG, lambda: _main(argv, out))


def _main(argv, out):
    from convnet.configs import check_config, check_size, output_width
    args = build_parser().parse_args(argv)
    state = checkpoint.load(args.checkpoint)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or "LAYERS" not in cfg:
        raise UsageError(f"{args.checkpoint}: the checkpoint holds no network config")
    check_config(cfg, args.checkpoint)
    check_size(cfg, args.checkpoint)
    run = state.get("run") or {}
    if not isinstance(run.get("data", ""), str):
        raise UsageError(f"{args.checkpoint}: run setting 'data' is {run.get('data')!r}, not a string")
    data = args.data or run.get("data") or "fashion-mnist"
    devices = cli.resolve_device(args.device, args.gpus)
    from convnet.data import load_dataset
    from convnet.net import Net
    ds = load_dataset(data, args.split)
    n_out = output_width(cfg)
    top = int(np.max(ds.labels)) if len(ds.labels) else -1
    if n_out is not None and (len(ds.classes) > n_out or top >= n_out):
        raise UsageError(f"{args.checkpoint}: its net tells {n_out} classes apart, {ds.name} has "
                         f"{len(ds.classes)} (labels up to {top}); evaluate it on the data it was trained on")
    c, h, w = next(tuple(L["shape"]) for L in cfg["LAYERS"] if L.get("type") == "data")
    n_img, s, s2, cc = ds.images.shape
    if cc != c or s < h or s2 < w or h != w:
        raise UsageError(f"the checkpoint's net takes {c}x{h}x{w} inputs, {ds.name} has {cc}x{s}x{s2} images")
    if s != s2:
        raise UsageError(f"{ds.name}: crops need square images, got {s}x{s2}")
    try:
        net = Net(cfg, devices=devices, seed=0, precision=args.precision or run.get("precision", "fp32"))
        net.load_state_dict(state["net"])
    except (TypeError, ValueError) as e:
        raise UsageError(f"{args.checkpoint}: {e}") from None
    crops = args.crops
    if s == h and crops == "ten":
        out(f"note: {ds.name} images are already {h}x{w}, the net's input: plain evaluation, no crops")
        crops = "center"
    n = min(n_img, args.limit or n_img)
    top1, top5 = evaluate(net, ds.images[:n], ds.labels[:n], ds.mean, h, crops, args.batch_size)
    view = "whole image" if s == h else ("ten crops" if crops == "ten" else "centre crop")
    out(f"{args.checkpoint} (epoch {state.get('epoch')}): {ds.name} {args.split}, {n} images, {view}: "
        f"top-1 error {100 * top1:.2f}%, top-5 error {100 * top5:.2f}% (accuracy {100 * (1 - top1):.2f}%)")
    return cli.EXIT_OK


if __name__ == "__main__":
    from convnet import startup
    startup.finish(main())
