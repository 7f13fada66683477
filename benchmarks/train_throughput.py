"""Whole-network training speed: AlexNet (config `alexnet`) at batch 128, ours against PyTorch.

    python3 benchmarks/train_throughput.py                   # batch 128, 20 timed steps
    python3 benchmarks/train_throughput.py --steps 50 --batch 256
    python3 benchmarks/train_throughput.py --precision bf16  # tensor cores, against autocast

One training step = forward, loss, backward and the SGD update (momentum 0.9,
weight decay 0.0005, the config's per-layer settings) on synthetic data, with
the conv and fc products in --precision (convnet/precision.py; default fp32).
Runs, in the same process:

  ours, the two columns on one GPU    Net(alexnet, devices=backend.cuda(0))
  ours, the two columns on two GPUs   devices=[0, 1], when two GPUs are present
  PyTorch                             the same network on one GPU: grouped
                                      convolutions, LRN within each column's
                                      channels with alpha * size (PyTorch divides
                                      alpha by size), k = 2, dropout 0.5,
                                      torch.optim.SGD with the same lr, momentum
                                      and weight decay per parameter (equal to the
                                      paper's rule at a fixed lr); cudnn.benchmark
                                      on, and per --precision (TORCH_MODES):
                                      fp32: TF32 off; tf32: PyTorch's default
                                      (TF32 convolutions, FP32 matmuls); bf16:
                                      bf16 autocast (FP32 master weights)

Before timing, one step from the same weights (rescaled to std 1/sqrt(fan-in),
so that every layer's gradient is well-conditioned; ours copied into the
PyTorch model) and the same batch, dropout off, is checked against PyTorch's
model run in float64: the loss before and after the update (relative
difference) and every parameter's update (normwise relative error). Ours must
be within LOSS_TOL / UPDATE_TOL of float64, or within REDUCED_FACTOR times the
error of PyTorch's own step in the same precision (fp32: TF32 off; tf32: TF32
convolutions and matmuls; bf16: autocast), whichever is larger: in bf16 one
step moves the updates by 10-40% from float64 in either library (measured on
the CPU at batch 2). The result is printed and stored, and a failed check makes
the exit code 1 (the timings are still reported).
Step times are wall-clock with the devices synchronised at the end of each step
(both sides read the loss back as a Python float every step, as a trainer
would); images/s = batch / median step time. A per-layer table of ours
(forward and backward per layer, CUDA events) and the peak device memory of
both (CuPy's memory pool after the run; torch.cuda.max_memory_allocated) follow.
Results: benchmarks/results/train_throughput-<device>-<date>-<commit>.json.

Without a GPU: says so, runs one training step of a small config (cifar-80sec,
batch 8) on the CPU path (the NumPy backend; --precision rounds the products'
inputs as the kernels do), prints it, and exits 0.
"""
import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from convnet.precision import PRECISIONS  # noqa: E402

LOSS_TOL = 1e-4          # relative difference of the losses, ours vs float64
UPDATE_TOL = 1e-3        # normwise relative error of the weight updates, ours vs float64
REDUCED_FACTOR = 3.0     # tf32 / bf16: ours at most this times PyTorch's error in that precision
# PyTorch's settings per --precision: (cuDNN TF32, matmul TF32, bf16 autocast) when timed; the
# check runs tf32 with TF32 matmuls too, so that both sides round the same products
TORCH_MODES = {"fp32": (False, False, False), "tf32": (True, False, False), "bf16": (False, False, True)}
CHECK_MODES = dict(TORCH_MODES, tf32=(True, True, False))
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
    net = Net(cfg, seed=args.seed, precision=args.precision)
    opt = make_sgd(net, cfg)
    rng = np.random.default_rng(args.seed)
    shape = next(layer["shape"] for layer in cfg["LAYERS"] if layer["type"] == "data")
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    classes = num_classes(cfg)
    labels = rng.integers(0, classes, n).astype(np.int32)
    t0 = time.perf_counter()
    loss = train_step(net, opt, x, labels)
    dt = time.perf_counter() - t0
    print(f"one training step of '{args.cpu_config}' on the CPU (NumPy backend), batch {n}, {args.precision}: "
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


def set_torch_mode(torch, mode):
    """PyTorch's TF32 switches as mode = (cudnn TF32, matmul TF32, bf16 autocast) says; returns
    the context the forward runs in (bf16 autocast, or none)."""
    cudnn_tf32, matmul_tf32, autocast = mode
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    return lambda x: (torch.autocast(x.device.type, dtype=torch.bfloat16) if autocast
                      else contextlib.nullcontext())


def torch_step(torch, model, opt, x, labels, forward_ctx=None):
    opt.zero_grad(set_to_none=True)
    with (forward_ctx(x) if forward_ctx else contextlib.nullcontext()):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()              # outside autocast, as PyTorch recommends
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


def _step_errors(got, ref):
    """(loss relative difference, {param: normwise update error}) of a step against ref's."""
    loss = max(abs(g - r) / max(abs(r), 1e-30) for g, r in zip(got["loss"], ref["loss"]))
    return loss, {k: common.relative_error(got["update"][k], ref["update"][k]) for k in ref["update"]}


def _torch_one_step(torch, cfg, net, x, labels, mode, dtype, device):
    """One step of PyTorch's model from net's weights: {"loss": [before, after], "update": ...}."""
    model = build_torch_alexnet(torch, lrn_settings(cfg), 0.0).to(device=device, dtype=dtype)
    copy_weights_to_torch(torch, net, model)
    opt = torch_sgd(torch, net, model, cfg)
    ctx = set_torch_mode(torch, mode)
    xt = torch.as_tensor(x, device=device).to(dtype)
    yt = torch.as_tensor(labels, device=device).long()
    before = torch_state(model)
    l0 = torch_step(torch, model, opt, xt, yt, ctx)
    with torch.no_grad(), ctx(xt):
        l1 = torch.nn.functional.cross_entropy(model(xt), yt).item()
    after = torch_state(model)
    return {"loss": [l0, l1], "update": {f"{m}.{k}": after[m][i].astype(np.float64) - before[m][i]
                                         for m in TORCH_MAP for i, k in enumerate(("w", "b"))}}


def check_same_step(torch, cfg, x, labels, seed, precision="fp32", device="cuda"):
    """One step of ours (in `precision`) and of PyTorch (in float64, and in `precision`) from
    the same weights and batch, dropout off: is ours close enough to float64? On "cuda" our
    net runs on GPU 0 and x, labels are CuPy arrays; on "cpu" it runs on the host."""
    from convnet import backend
    from convnet.net import Net
    cfg0 = without_dropout(cfg)
    net = Net(cfg0, devices=backend.cuda(0) if device == "cuda" else None, seed=seed, precision=precision)
    opt = make_sgd(net, cfg0)
    # Weights of std 1/sqrt(fan-in) (biases as initialised): with the paper's std 0.01 the
    # signal fades through the layers, and conv1's gradient is so small that float32 rounding
    # alone moves it by about 1% (PyTorch's as ours), which would hide a real error there.
    for p in net.params():
        if p.value.ndim > 1:
            std = float(backend.to_host(p.value).std())
            p.value *= np.float32(1.0 / (std * np.sqrt(np.prod(p.value.shape[1:]))))
    before = ours_as_torch(net)
    ref = _torch_one_step(torch, cfg0, net, x, labels, TORCH_MODES["fp32"], torch.float64, device)
    theirs = _torch_one_step(torch, cfg0, net, x, labels, CHECK_MODES[precision], torch.float32, device)
    ours = {"loss": [train_step(net, opt, x, labels), net.loss(net.forward(x, train=True), labels)]}
    after = ours_as_torch(net)
    ours["update"] = {f"{m}.{k}": after[m][i] - before[m][i] for m in TORCH_MAP for i, k in enumerate(("w", "b"))}
    loss_err, update_err = _step_errors(ours, ref)
    t_loss, t_update = _step_errors(theirs, ref)
    # allowed: the fp32 tolerances, or REDUCED_FACTOR x PyTorch's own error, whichever is larger
    loss_tol = max(LOSS_TOL, REDUCED_FACTOR * t_loss)
    update_tol = {k: max(UPDATE_TOL, REDUCED_FACTOR * t_update[k]) for k in update_err}
    res = {"precision": precision, "reference": "PyTorch, float64", "loss_ours": ours["loss"],
           "loss_reference": ref["loss"], "loss_rel_diff": loss_err, "update_rel_err": update_err,
           "torch_mode": dict(zip(("cudnn_tf32", "matmul_tf32", "bf16_autocast"), CHECK_MODES[precision])),
           "loss_torch": theirs["loss"], "torch_loss_rel_diff": t_loss, "torch_update_rel_err": t_update}
    worst = max(update_err, key=lambda k: update_err[k] / update_tol[k])
    passed = bool(loss_err <= loss_tol and all(update_err[k] <= update_tol[k] for k in update_err))
    res.update(loss_tol=loss_tol, update_tol=update_tol, passed=passed)
    line = (f"check, one step from the same weights (dropout off), against PyTorch in float64: "
            f"ours ({precision}) loss {ours['loss'][0]:.6f} -> {ours['loss'][1]:.6f}, float64 "
            f"{ref['loss'][0]:.6f} -> {ref['loss'][1]:.6f} (rel diff {loss_err:.1e}, allowed {loss_tol:.1e}); "
            f"worst update error {update_err[worst]:.1e} ({worst}, allowed {update_tol[worst]:.1e})")
    line += f"; PyTorch in {precision}: loss rel diff {t_loss:.1e}, {worst} {t_update[worst]:.1e}"
    print(f"{line}: {'ok' if passed else 'FAIL'}")
    del net, opt
    return res


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
    net = Net(cfg, devices=backend.parse(f"{NET_BACKEND}:{','.join(map(str, devices))}"), seed=args.seed,
              precision=args.precision)
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
    ctx = set_torch_mode(torch, TORCH_MODES[args.precision])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    losses = []
    times = time_steps(lambda: losses.append(torch_step(torch, model, opt, xt, yt, ctx)),
                       torch.cuda.synchronize, args.steps, args.warmup)
    med = common.median(times)
    res = {"step_s": times, "median_step_s": med, "images_per_s": step_images_per_s(args.batch, med),
           "mode": dict(zip(("cudnn_tf32", "matmul_tf32", "bf16_autocast"), TORCH_MODES[args.precision])),
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
    print(f"train_throughput: '{args.config}' batch {args.batch} {args.precision} on {info['device']} x{n_dev} "
          f"(driver {info['nvidia_driver']}, CUDA runtime {info['cuda_runtime']}, CuPy {info['cupy']}, "
          f"PyTorch {info.get('torch', 'absent')}, cuDNN {info.get('cudnn')}); "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    rng = np.random.default_rng(args.seed)
    shape = next(layer["shape"] for layer in cfg["LAYERS"] if layer["type"] == "data")
    x = cupy.asarray(rng.standard_normal((args.batch, *shape), dtype=np.float32))
    classes = num_classes(cfg)
    labels = cupy.asarray(rng.integers(0, classes, args.batch).astype(np.int32))
    extra = {"config": args.config, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
             "precision": args.precision}
    ok = True
    compare = torch is not None and args.config == "alexnet"
    if torch is not None and not compare:
        print(f"note: the PyTorch model mirrors 'alexnet' only; no PyTorch run for '{args.config}'")
    if compare:
        extra["check"] = check_same_step(torch, cfg, x, labels, args.seed, args.precision)
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
        mode = {"fp32": "TF32 off", "tf32": "default: TF32 convolutions", "bf16": "bf16 autocast"}[args.precision]
        print(f"PyTorch (cuDNN, {mode}), one GPU | {r['median_step_s'] * 1e3:.1f} ms/step | "
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
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="conv and fc products: fp32 (conv.cu, gemm.cu) or the tensor-core kernels in tf32 / bf16")
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
