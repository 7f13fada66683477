"""Whole-network training speed: AlexNet (config `alexnet`) at batch 128, ours against PyTorch.

    python3 benchmarks/train_throughput.py                   # batch 128, 20 timed steps
    python3 benchmarks/train_throughput.py --steps 50 --batch 256

One training step = forward, loss, backward and the SGD update (momentum 0.9,
weight decay 0.0005, the config's per-layer settings), in FP32 on synthetic
data. Runs, in the same process:

  ours, the two columns on one GPU    Net(alexnet, devices=backend.cuda(0))
  ours, the two columns on two GPUs   devices=[0, 1], when two GPUs are present
  PyTorch                             the same network on one GPU: grouped
                                      convolutions, LRN within each column's
                                      channels with alpha * size (PyTorch divides
                                      alpha by size), k = 2, dropout 0.5,
                                      torch.optim.SGD with the same lr, momentum
                                      and weight decay per parameter (equal to the
                                      paper's rule at a fixed lr); TF32 off,
                                      cudnn.benchmark on

Before timing, one step of ours and of PyTorch from the same weights (ours
copied into the PyTorch model) and the same batch, dropout off, must give the
same loss before and after the update (relative difference < 1e-4) and the
same weight updates (normwise relative error < 1e-3); the result is printed and
stored, and a mismatch makes the exit code 1 (the timings are still reported).
Step times are wall-clock with the devices synchronised at the end of each step
(both sides read the loss back as a Python float every step, as a trainer
would); images/s = batch / median step time. A per-layer table of ours
(forward and backward per layer, CUDA events) and the peak device memory of
both (CuPy's memory pool after the run; torch.cuda.max_memory_allocated) follow.
Results: benchmarks/results/train_throughput-<device>-<date>-<commit>.json.

Without a GPU: says so, runs one training step of a small config (cifar-80sec,
batch 8) on the CPU path (the NumPy backend), prints it, and exits 0.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

LOSS_TOL = 1e-4          # relative difference of the losses, ours vs PyTorch
UPDATE_TOL = 1e-3        # normwise relative error of the weight updates
NET_BACKEND = "cuda"     # our net's backend in the GPU run (tests/test_benchmarks.py swaps in "emu")
# PyTorch module -> our layers whose parameters it concatenates (along the output axis)
TORCH_MAP = {"conv1": ["conv1a", "conv1b"], "conv2": ["conv2a", "conv2b"], "conv3": ["conv3a", "conv3b"],
             "conv4": ["conv4a", "conv4b"], "conv5": ["conv5a", "conv5b"], "fc6": ["fc6a", "fc6b"],
             "fc7": ["fc7a", "fc7b"], "fc8": ["fc8"]}


def step_images_per_s(batch, seconds):
    return batch / seconds


def num_classes(cfg):
    from convnet.net import Net
    shapes = Net(cfg, materialize=False)          # shapes only, no weights
    return shapes.layers[shapes.output].out_shape[0]


def without_dropout(cfg):
    """A copy of the config with every dropout layer's p set to 0 (for the equality check)."""
    cfg = copy.deepcopy(cfg)
    for layer in cfg["LAYERS"]:
        if layer.get("type") == "dropout":
            layer["p"] = 0.0
    return cfg


def make_sgd(net, cfg):
    from convnet.optim import SGD
    h = cfg.get("HYPER", {})
    return SGD(net.params(), lr=h.get("lr", 0.01), momentum=h.get("momentum", 0.9),
               weight_decay=h.get("weight_decay", 0.0005))


def train_step(net, opt, x, labels):
    loss = net.loss(net.forward(x, train=True), labels)
    net.backward()
    opt.step()
    return loss


# --- the CPU path (no GPU) ----------------------------------------------------------

def run_cpu(args, reason):
    print(common.no_gpu_banner("train_throughput", reason))
    from convnet.configs import load_config
    from convnet.net import Net
    cfg = load_config(args.cpu_config)
    n = args.batch or 8
    net = Net(cfg, seed=args.seed)
    opt = make_sgd(net, cfg)
    rng = np.random.default_rng(args.seed)
    shape = next(layer["shape"] for layer in cfg["LAYERS"] if layer["type"] == "data")
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    classes = num_classes(cfg)
    labels = rng.integers(0, classes, n).astype(np.int32)
    t0 = time.perf_counter()
    loss = train_step(net, opt, x, labels)
    dt = time.perf_counter() - t0
    print(f"one training step of '{args.cpu_config}' on the CPU (NumPy backend), batch {n}: "
          f"loss {loss:.4f}, {dt * 1e3:.0f} ms, {step_images_per_s(n, dt):.0f} images/s")
    if not np.isfinite(loss):
        print("error: the loss is not finite", file=sys.stderr)
        return 1
    return 0


# --- PyTorch's AlexNet -----------------------------------------------------------------

def build_torch_alexnet(torch, lrn, p_drop):
    """The paper's network on one device: the two columns as groups."""
    nn, F = torch.nn, torch.nn.functional

    class ColumnLRN(nn.Module):
        """LRN within each column's channels: (N, C) viewed as (N*columns, C/columns), no copy."""

        def __init__(self, columns):
            super().__init__()
            self.columns = columns

        def forward(self, x):
            n, c, h, w = x.shape
            y = F.local_response_norm(x.reshape(n * self.columns, c // self.columns, h, w),
                                      lrn["size"], alpha=lrn["alpha"] * lrn["size"],
                                      beta=lrn["beta"], k=lrn["k"])
            return y.reshape(n, c, h, w)

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 96, 11, 4, 0)
            self.conv2 = nn.Conv2d(96, 256, 5, 1, 2, groups=2)
            self.conv3 = nn.Conv2d(256, 384, 3, 1, 1)
            self.conv4 = nn.Conv2d(384, 384, 3, 1, 1, groups=2)
            self.conv5 = nn.Conv2d(384, 256, 3, 1, 1, groups=2)
            self.fc6 = nn.Linear(9216, 4096)
            self.fc7 = nn.Linear(4096, 4096)
            self.fc8 = nn.Linear(4096, 1000)
            self.lrn = ColumnLRN(2)
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.drop = nn.Dropout(p_drop)

        def forward(self, x):
            x = self.pool(self.lrn(F.relu(self.conv1(x))))
            x = self.pool(self.lrn(F.relu(self.conv2(x))))
            x = F.relu(self.conv3(x))
            x = F.relu(self.conv4(x))
            x = self.pool(F.relu(self.conv5(x)))
            x = torch.flatten(x, 1)
            x = self.drop(F.relu(self.fc6(x)))
            x = self.drop(F.relu(self.fc7(x)))
            return self.fc8(x)

    return AlexNet()


def lrn_settings(cfg):
    layer = next((l for l in cfg["LAYERS"] if l.get("type") == "lrn"), {})
    return {k: layer.get(k, d) for k, d in (("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", 2.0))}


def copy_weights_to_torch(torch, net, model):
    """Our parameters (two columns) into the PyTorch model (groups); clear error on a mismatch."""
    state = net.state_dict()
    with torch.no_grad():
        for module_name, layers in TORCH_MAP.items():
            module = getattr(model, module_name)
            for key, target in (("w", module.weight), ("b", module.bias)):
                names = [f"{layer}.{key}" for layer in layers]
                missing = [n for n in names if n not in state]
                if missing:
                    raise ValueError(f"the config has no parameter {missing[0]}: "
                                     "the PyTorch model mirrors the paper's alexnet only")
                value = np.concatenate([state[n] for n in names], axis=0)
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"{'+'.join(names)} has shape {value.shape}, "
                                     f"PyTorch's {module_name}.{key} {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def torch_sgd(torch, net, model, cfg):
    """torch.optim.SGD with each parameter's lr, momentum and weight decay taken from ours."""
    ours = {p.name: p for p in net.params()}
    base_lr = cfg.get("HYPER", {}).get("lr", 0.01)
    groups = []
    for module_name, layers in TORCH_MAP.items():
        module = getattr(model, module_name)
        for key, param in (("w", module.weight), ("b", module.bias)):
            h = ours[f"{layers[0]}.{key}"].hyper
            groups.append({"params": [param], "lr": base_lr * h.get("lr_mult", 1.0),
                           "momentum": h.get("momentum", 0.9), "weight_decay": h.get("weight_decay", 0.0)})
    return torch.optim.SGD(groups, lr=base_lr)


def torch_step(torch, model, opt, x, labels):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    opt.step()
    return loss.item()


def torch_state(model):
    """{module name: (w, b)} as NumPy arrays."""
    return {m: (getattr(model, m).weight.detach().cpu().numpy().copy(),
                getattr(model, m).bias.detach().cpu().numpy().copy()) for m in TORCH_MAP}


def ours_as_torch(net):
    state = net.state_dict()
    return {m: tuple(np.concatenate([state[f"{l}.{k}"] for l in layers], axis=0) for k in ("w", "b"))
            for m, layers in TORCH_MAP.items()}


def check_same_step(cupy, torch, cfg, x, labels, seed):
    """One step of each from the same weights and batch, dropout off: same losses and updates?"""
    from convnet.net import Net
    cfg0 = without_dropout(cfg)
    from convnet import backend
    net = Net(cfg0, devices=backend.cuda(0), seed=seed)
    opt = make_sgd(net, cfg0)
    model = build_torch_alexnet(torch, lrn_settings(cfg), 0.0).cuda()
    copy_weights_to_torch(torch, net, model)
    topt = torch_sgd(torch, net, model, cfg0)
    before = ours_as_torch(net)
    xt, yt = torch.as_tensor(x, device="cuda"), torch.as_tensor(labels, device="cuda").long()

    ours0 = train_step(net, opt, x, labels)
    ours1 = net.loss(net.forward(x, train=True), labels)
    theirs0 = torch_step(torch, model, topt, xt, yt)
    with torch.no_grad():
        theirs1 = torch.nn.functional.cross_entropy(model(xt), yt).item()

    after_ours, after_torch = ours_as_torch(net), torch_state(model)
    update_err = {}
    for m in TORCH_MAP:
        for i, k in enumerate(("w", "b")):
            update_err[f"{m}.{k}"] = common.relative_error(after_ours[m][i] - before[m][i],
                                                           after_torch[m][i] - before[m][i])
    loss_err = max(abs(ours0 - theirs0) / abs(theirs0), abs(ours1 - theirs1) / abs(theirs1))
    worst = max(update_err, key=update_err.get)
    passed = bool(loss_err < LOSS_TOL and update_err[worst] < UPDATE_TOL)
    print(f"check, one step from the same weights (dropout off): loss ours {ours0:.6f} -> {ours1:.6f}, "
          f"PyTorch {theirs0:.6f} -> {theirs1:.6f} (rel diff {loss_err:.1e}); worst update error "
          f"{update_err[worst]:.1e} ({worst}): {'ok' if passed else 'FAIL'}")
    del net, opt, model, topt, xt, yt
    return {"loss_ours": [ours0, ours1], "loss_torch": [theirs0, theirs1], "loss_rel_diff": loss_err,
            "update_rel_err": update_err, "passed": passed}


# --- timing ---------------------------------------------------------------------------------

def sync_all(cupy, devices):
    for d in devices:
        cupy.cuda.Device(d).synchronize()


def time_steps(step, sync, steps, warmup):
    """Wall-clock seconds of each step, the devices synchronised after each."""
    for _ in range(warmup):
        step()
    sync()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        out.append(time.perf_counter() - t0)
    return out


class LayerTimer:
    """CUDA events around every layer's forward and backward (instance attributes
    wrapping the methods; remove() restores them)."""

    def __init__(self, cupy, net):
        self.cupy, self.net, self.pending = cupy, net, []
        self.ms = {name: {"fwd": [], "bwd": []} for name in net.layers}
        for name, layer in net.layers.items():
            layer.forward = self._wrap(layer.forward, name, "fwd")
            layer.backward = self._wrap(layer.backward, name, "bwd")

    def _wrap(self, fn, name, kind):
        cupy = self.cupy

        def timed(*args, **kwargs):
            start = cupy.cuda.Event()
            start.record()
            out = fn(*args, **kwargs)
            end = cupy.cuda.Event()
            end.record()
            self.pending.append((name, kind, start, end))
            return out
        return timed

    def collect(self):
        for name, kind, start, end in self.pending:
            end.synchronize()
            self.ms[name][kind].append(self.cupy.cuda.get_elapsed_time(start, end))
        self.pending = []

    def remove(self):
        for layer in self.net.layers.values():
            for attr in ("forward", "backward"):
                layer.__dict__.pop(attr, None)

    def table(self):
        rows = []
        for name, t in self.ms.items():
            if not t["fwd"] and not t["bwd"]:      # e.g. the data layer: never called
                continue
            fwd = common.median(t["fwd"]) if t["fwd"] else 0.0
            bwd = common.median(t["bwd"]) if t["bwd"] else 0.0
            rows.append({"layer": name, "type": self.net.layers[name].kind,
                         "column": self.net.layers[name].column, "fwd_ms": fwd, "bwd_ms": bwd,
                         "fwd_times_ms": t["fwd"], "bwd_times_ms": t["bwd"]})
        return rows


def pool_bytes(cupy, devices):
    pool = cupy.get_default_memory_pool()
    total = 0
    for d in devices:
        with cupy.cuda.Device(d):
            total += pool.total_bytes()
    return total


def free_pool(cupy, devices):
    pool = cupy.get_default_memory_pool()
    for d in devices:
        with cupy.cuda.Device(d):
            pool.free_all_blocks()


def run_ours(cupy, cfg, devices, x, labels, args, per_layer):
    """Times our training step on `devices`; returns a result dict."""
    from convnet.net import Net
    free_pool(cupy, devices)
    from convnet import backend
    net = Net(cfg, devices=backend.parse(f"{NET_BACKEND}:{','.join(map(str, devices))}"), seed=args.seed)
    opt = make_sgd(net, cfg)
    losses = []
    times = time_steps(lambda: losses.append(train_step(net, opt, x, labels)),
                       lambda: sync_all(cupy, devices), args.steps, args.warmup)
    med = common.median(times)
    res = {"devices": devices, "step_s": times, "median_step_s": med,
           "images_per_s": step_images_per_s(args.batch, med), "losses": losses,
           # the pool keeps its high-water mark; the input batch was allocated before it
           "pool_bytes": pool_bytes(cupy, devices) - x.nbytes - labels.nbytes}
    if per_layer:
        timer = LayerTimer(cupy, net)
        for _ in range(args.layer_steps):
            train_step(net, opt, x, labels)
            sync_all(cupy, devices)
            timer.collect()
        timer.remove()
        res["layers"] = timer.table()
    net = opt = timer = None          # free the net before emptying the pool
    free_pool(cupy, devices)
    return res


def run_torch(cupy, torch, cfg, x, labels, args):
    from convnet.net import Net
    net = Net(cfg, seed=args.seed)     # the same initial weights, on the host
    model = build_torch_alexnet(torch, lrn_settings(cfg), 0.5).cuda()
    copy_weights_to_torch(torch, net, model)
    opt = torch_sgd(torch, net, model, cfg)
    del net
    model.train()
    xt, yt = torch.as_tensor(x, device="cuda"), torch.as_tensor(labels, device="cuda").long()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    losses = []
    times = time_steps(lambda: losses.append(torch_step(torch, model, opt, xt, yt)),
                       torch.cuda.synchronize, args.steps, args.warmup)
    med = common.median(times)
    res = {"step_s": times, "median_step_s": med, "images_per_s": step_images_per_s(args.batch, med),
           "losses": losses, "max_memory_allocated": torch.cuda.max_memory_allocated(),
           "max_memory_reserved": torch.cuda.max_memory_reserved()}
    model = opt = xt = yt = None
    torch.cuda.empty_cache()
    return res


def run_gpu(args, cupy, torch):
    from convnet.configs import load_config
    cfg = load_config(args.config)
    n_dev = cupy.cuda.runtime.getDeviceCount()
    if torch is not None:
        common.setup_torch_fp32(torch)
        common.check_same_stream(cupy, torch)
    info = common.device_info(cupy, torch)
    info["gpus"] = n_dev
    print(f"train_throughput: '{args.config}' batch {args.batch} fp32 on {info['device']} x{n_dev} "
          f"(driver {info['nvidia_driver']}, CUDA runtime {info['cuda_runtime']}, CuPy {info['cupy']}, "
          f"PyTorch {info.get('torch', 'absent')}, cuDNN {info.get('cudnn')}); "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    rng = np.random.default_rng(args.seed)
    shape = next(layer["shape"] for layer in cfg["LAYERS"] if layer["type"] == "data")
    x = cupy.asarray(rng.standard_normal((args.batch, *shape), dtype=np.float32))
    classes = num_classes(cfg)
    labels = cupy.asarray(rng.integers(0, classes, args.batch).astype(np.int32))
    extra = {"config": args.config, "batch": args.batch, "steps": args.steps, "warmup": args.warmup}
    ok = True
    compare = torch is not None and args.config == "alexnet"
    if torch is not None and not compare:
        print(f"note: the PyTorch model mirrors 'alexnet' only; no PyTorch run for '{args.config}'")
    if compare:
        extra["check"] = check_same_step(cupy, torch, cfg, x, labels, args.seed)
        ok = extra["check"]["passed"]
        cupy.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()

    runs = {}
    runs["ours_1gpu"] = run_ours(cupy, cfg, [0], x, labels, args, per_layer=True)
    r = runs["ours_1gpu"]
    print(f"ours on gpu0                   | {r['median_step_s'] * 1e3:.1f} ms/step | "
          f"{r['images_per_s']:.0f} images/s | pool {r['pool_bytes'] / 2**30:.2f} GiB")
    if n_dev >= 2:
        runs["ours_2gpu"] = run_ours(cupy, cfg, [0, 1], x, labels, args, per_layer=False)
        r = runs["ours_2gpu"]
        print(f"ours on gpu0+gpu1              | {r['median_step_s'] * 1e3:.1f} ms/step | "
              f"{r['images_per_s']:.0f} images/s | pools {r['pool_bytes'] / 2**30:.2f} GiB")
    else:
        print("ours on two GPUs: skipped (one GPU present)")
    if compare:
        runs["torch"] = run_torch(cupy, torch, cfg, x, labels, args)
        r = runs["torch"]
        print(f"PyTorch (cuDNN), one GPU       | {r['median_step_s'] * 1e3:.1f} ms/step | "
              f"{r['images_per_s']:.0f} images/s | max allocated {r['max_memory_allocated'] / 2**30:.2f} GiB")
        print(f"ours (one GPU) vs PyTorch: {r['median_step_s'] / runs['ours_1gpu']['median_step_s']:.2f}x "
              f"(PyTorch step time / ours: > 1 means we are faster)")

    layers = runs["ours_1gpu"].pop("layers")
    step_ms = runs["ours_1gpu"]["median_step_s"] * 1e3
    print("per layer, ours on gpu0 (median of CUDA-event times over "
          f"{args.layer_steps} steps; {step_ms:.1f} ms per step):")
    print(f"  {'layer':<10} {'type':<13} {'fwd ms':>8} {'bwd ms':>8} {'% step':>7}")
    for row in layers:
        share = 100 * (row["fwd_ms"] + row["bwd_ms"]) / step_ms
        print(f"  {row['layer']:<10} {row['type']:<13} {row['fwd_ms']:8.3f} {row['bwd_ms']:8.3f} {share:6.1f}%")
    tot = sum(r["fwd_ms"] + r["bwd_ms"] for r in layers)
    print(f"  {'sum of layers':<24} {tot:17.3f} {100 * tot / step_ms:6.1f}%  "
          "(the rest: loss, cross-column copies, the SGD update, Python)")
    extra.update(runs=runs, layers=layers)
    rows = [{"run": name, "median_step_ms": r["median_step_s"] * 1e3, "images_per_s": r["images_per_s"],
             "step_times_ms": [t * 1e3 for t in r["step_s"]]} for name, r in runs.items()]
    path = common.write_results("train_throughput", info, rows, extra)
    print(f"results: {path}")
    if not ok:
        print("the check against PyTorch FAILED (see above)")
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="alexnet", help="network config (default alexnet)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; 8 on the CPU)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--layer-steps", type=int, default=5, help="steps for the per-layer table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-config", default="cifar-80sec", help="config of the CPU step (no GPU)")
    p.add_argument("--no-gpu", action="store_true", help="run the CPU step even if a GPU is present")
    args = p.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.steps < 1 or args.warmup < 0 or args.layer_steps < 1:
        p.error("--steps and --layer-steps must be >= 1, --warmup >= 0")
    cupy, reason = common.gpu_status(args.no_gpu)
    if cupy is None:
        return run_cpu(args, reason)
    args.batch = args.batch or 128
    torch, why = common.torch_status()
    if torch is None:
        print(f"note: {why}: no PyTorch comparison")
    return run_gpu(args, cupy, torch)


if __name__ == "__main__":
    sys.exit(main())
