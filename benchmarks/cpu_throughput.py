"""Training throughput on the CPU: our NumPy path against PyTorch's CPU path, same net, same machine.

    python3 benchmarks/cpu_throughput.py                    # fashion net, 7 rounds of 100 steps each
    python3 benchmarks/cpu_throughput.py --steps 50 --rounds 5 --no-torch
    python3 benchmarks/cpu_throughput.py --threads 1 --per-op

Both train the same network (a PyTorch model built from the config's layers,
starting from our net's initial weights) with the same recipe (the config's
batch, learning rate, momentum and weight decay) on the same batches (the
first --batches batches of the Fashion-MNIST training set as our loader makes
them; random images where the dataset is not installed, said so in the
results). First the check: one step's loss and every gradient of both on the
same batch, then a second step's loss after one SGD update (tolerances:
CHECK_RTOL); a mismatch prints FAIL and nothing is timed.

Then the timing. Each implementation runs in its own worker process (so that
neither's threads or allocator settings touch the other), both started and
warmed up before the first round; a round times one block of --steps steps
of each, the order alternating between rounds, and the report is the median
block of each, in ms/step and images/s, with every block's time, the load
average during the run, and the thread settings. PyTorch uses
torch.set_num_threads(--threads), ours convnet.cpu_ops' thread count
(CONVNET_CPU_THREADS); the default is one per available core for both.

--per-op then times every conv, pool and fc layer's forward and backward
ops of both in one process, one thread each, in CPU time (the fastest of 20
runs), which a loaded machine disturbs far less than wall time: where the
gap between the two lies.

Results: benchmarks/results/cpu_throughput-<cpu>-<date>-<commit>.json
(written atomically). PyTorch is a benchmark-only dependency: without it
this script times ours alone.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import common  # noqa: E402  (puts the repository root on sys.path)

from convnet.configs import load_config  # noqa: E402

CHECK_RTOL = {"loss": 1e-4, "grad": 2e-3}


# --- data and models --------------------------------------------------------

def load_batches(cfg, count, data="fashion-mnist", seed=0):
    """(list of (x float32 (B, C, H, W), labels int64 (B,)), source): the first `count` training
    batches of Fashion-MNIST as our loader makes them, or random ones (data="random", or
    without the dataset)."""
    batch = int(cfg["HYPER"]["batch_size"])
    shape = next(tuple(L["shape"]) for L in cfg["LAYERS"] if L["type"] == "data")
    why = "--data random"
    if data != "random":
        try:
            from convnet.data import load_dataset, make_loader
            ds = load_dataset(data, "train")
        except Exception as e:                # not installed: the timing does not depend on the values
            why = common._one_line(e)
    if data == "random" or why != "--data random":
        rng = np.random.default_rng(seed)
        out = [(rng.standard_normal((batch,) + shape).astype(np.float32),
                rng.integers(0, 10, batch).astype(np.int64)) for _ in range(count)]
        return out, f"random images ({why})"
    out = []
    for x, labels in make_loader(ds, batch, train=True, seed=seed, drop_last=True):
        out.append((np.ascontiguousarray(x, dtype=np.float32), np.asarray(labels, dtype=np.int64)))
        if len(out) == count:
            break
    return out, "Fashion-MNIST training set"


def torch_model(cfg, torch):
    """A torch.nn.Sequential computing the config's net (a chain of conv, pool, fc, relu, tanh layers)."""
    nn = torch.nn
    layers, named = [], []
    shape = None
    flat = False
    for L in cfg["LAYERS"]:
        kind = L["type"]
        if kind == "data":
            shape = tuple(L["shape"])
            continue
        if kind == "softmax_loss":
            break
        if kind == "conv":
            size = L["size"]
            conv = nn.Conv2d(shape[0], L["filters"], size, stride=L.get("stride", 1), padding=L.get("pad", 0),
                             groups=L.get("groups", 1))
            layers.append(conv)
            named.append((L["name"], conv))
            probe = conv(torch.zeros((1,) + shape))
            shape = tuple(probe.shape[1:])
        elif kind == "pool":
            cls = nn.MaxPool2d if L.get("mode", "max") == "max" else nn.AvgPool2d
            pool = cls(L.get("size", 3), L.get("stride", 2), ceil_mode=True)
            layers.append(pool)
            shape = tuple(pool(torch.zeros((1,) + shape)).shape[1:])
        elif kind == "fc":
            if not flat:
                layers.append(nn.Flatten())
                flat = True
            fc = nn.Linear(int(np.prod(shape)), L["outputs"])
            layers.append(fc)
            named.append((L["name"], fc))
            shape = (L["outputs"],)
        elif kind in ("relu", "tanh"):
            pass
        else:
            raise ValueError(f"layer '{L['name']}': type {kind!r} has no PyTorch equivalent here")
        neuron = L.get("neuron") if kind in ("conv", "fc") else kind if kind in ("relu", "tanh") else None
        if neuron == "relu":
            layers.append(nn.ReLU())
        elif neuron == "tanh":
            layers.append(nn.Tanh())
    return nn.Sequential(*layers), named


def load_torch_weights(named, state, torch):
    with torch.no_grad():
        for name, module in named:
            module.weight.copy_(torch.from_numpy(np.asarray(state[f"{name}.w"], dtype=np.float32)))
            module.bias.copy_(torch.from_numpy(np.asarray(state[f"{name}.b"], dtype=np.float32)))


def ours_trainer(cfg, state=None):
    """(step(x, labels) -> loss, net) for our net on the NumPy path with the config's recipe."""
    from convnet.net import Net
    from convnet.optim import SGD
    hyper = cfg["HYPER"]
    net = Net(cfg, seed=0)          # the host: the fast CPU ops
    if state is not None:
        net.load_state_dict(state)
    opt = SGD(net.params(), lr=float(hyper["lr"]), momentum=float(hyper.get("momentum", 0.9)),
              weight_decay=float(hyper.get("weight_decay", 0.0005)))

    def step(x, labels, update=True):
        loss = net.loss(net.forward(x, train=True), labels)
        net.backward()
        if update:
            opt.step()
        return loss

    return step, net


def torch_trainer(cfg, state, torch):
    """(step(x, labels) -> loss, model, named) for the PyTorch model with the same recipe."""
    hyper = cfg["HYPER"]
    model, named = torch_model(cfg, torch)
    load_torch_weights(named, state, torch)
    opt = torch.optim.SGD(model.parameters(), lr=float(hyper["lr"]), momentum=float(hyper.get("momentum", 0.9)),
                          weight_decay=float(hyper.get("weight_decay", 0.0005)))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, labels, update=True):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(labels))
        loss.backward()
        if update:
            opt.step()
        return float(loss.detach())

    return step, model, named


# --- the check ----------------------------------------------------------------

def check(cfg, batches, torch):
    """One step of both from the same weights: losses, gradients, then the loss after one update.
    Returns {"ok": bool, "loss_ours", "loss_torch", "grad_max_rel_err", "loss2_ours", "loss2_torch"}."""
    ours_step, net = ours_trainer(cfg)
    state = net.state_dict()
    torch_step, model, named = torch_trainer(cfg, state, torch)
    (x, labels), (x2, labels2) = batches[0], batches[1 % len(batches)]
    lo = ours_step(x, labels, update=False)
    lt = torch_step(x, labels, update=False)
    errs = {}
    params = {p.name: p for p in net.params()}
    for name, module in named:
        for key, tp in (("w", module.weight), ("b", module.bias)):
            ours = params[f"{name}.{key}"].grad
            ref = tp.grad.numpy().reshape(ours.shape)
            errs[f"{name}.{key}"] = common.relative_error(ours, ref)
    # the same update, then one more loss
    ours_step(x, labels)
    torch_step(x, labels)
    lo2 = ours_step(x2, labels2, update=False)
    lt2 = torch_step(x2, labels2, update=False)
    worst = max(errs.values())
    ok = (abs(lo - lt) <= CHECK_RTOL["loss"] * abs(lt) and abs(lo2 - lt2) <= CHECK_RTOL["loss"] * abs(lt2)
          and worst <= CHECK_RTOL["grad"])
    return {"ok": bool(ok), "loss_ours": lo, "loss_torch": lt, "grad_max_rel_err": worst,
            "grad_rel_err": errs, "loss2_ours": lo2, "loss2_torch": lt2}


# --- per op ------------------------------------------------------------------------

def _cpu_ms(fn, repeat):
    """The fastest of `repeat` runs of fn, in this thread's CPU milliseconds (robust to load)."""
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return 1e3 * best


def per_op(cfg, batches, torch, repeat=20):
    """One thread each: every conv, pool and fc layer's forward and backward, ours against
    PyTorch's, in CPU ms (fastest of `repeat`). Rows {"op", "ours_ms", "torch_ms"}."""
    import torch.nn.functional as F
    from convnet import cpu_ops
    cpu_ops.set_threads(1)
    torch.set_num_threads(1)
    _, net = ours_trainer(cfg)
    x, labels = batches[0]
    net.loss(net.forward(x, train=True), labels)
    rows = []
    rng = np.random.default_rng(0)
    for name in net.run_order:
        L = net.layers[name]
        if L.kind not in ("conv", "pool", "fc"):
            continue
        xin = np.ascontiguousarray(L.x)
        dy = rng.standard_normal(L.y.shape).astype(np.float32)
        X = torch.from_numpy(xin).requires_grad_(name != net.run_order[0])
        if L.kind == "conv":
            w, b = L.params["w"].value, L.params["b"].value
            geo = dict(stride=L.stride, pad=L.pad, groups=L.groups)
            relu = L.neuron == "relu"
            W, B = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
            with torch.no_grad():
                t_f = _cpu_ms(lambda: F.relu(F.conv2d(X, W, B, L.stride, L.pad, 1, L.groups)) if relu
                              else F.conv2d(X, W, B, L.stride, L.pad, 1, L.groups), repeat)
            rows.append({"op": f"{name} forward", "ours_ms": _cpu_ms(
                lambda: cpu_ops.conv2d_forward(xin, w, b, **geo, relu=relu), repeat), "torch_ms": t_f})
            Y = F.conv2d(X, W, B, L.stride, L.pad, 1, L.groups)
            DY = torch.from_numpy(dy)
            wrt = [W, B] + ([X] if X.requires_grad else [])

            def ours_bwd():
                cpu_ops.conv2d_backward_filter(dy, xin, w.shape, **geo)
                cpu_ops.conv2d_backward_bias(dy)
                if X.requires_grad:
                    cpu_ops.conv2d_backward_data(dy, w, xin.shape, **geo)
            rows.append({"op": f"{name} backward" + (" (no data gradient)" if not X.requires_grad else ""),
                         "ours_ms": _cpu_ms(ours_bwd, repeat),
                         "torch_ms": _cpu_ms(lambda: torch.autograd.grad(Y, wrt, DY, retain_graph=True), repeat)})
            if relu:
                yv = L.y
                YR = torch.from_numpy(np.ascontiguousarray(yv)).requires_grad_()
                R = F.relu(YR)
                rows.append({"op": f"{name} relu backward", "ours_ms": _cpu_ms(lambda: cpu_ops.relu_backward(dy, yv), repeat),
                             "torch_ms": _cpu_ms(lambda: torch.autograd.grad(R, [YR], DY, retain_graph=True), repeat)})
        elif L.kind == "pool" and L.mode == "max":
            X.requires_grad_(True)
            y, arg = cpu_ops.maxpool_forward(xin, L.size, L.stride, argmax=True)
            with torch.no_grad():
                t_f = _cpu_ms(lambda: F.max_pool2d(X, L.size, L.stride, ceil_mode=True), repeat)
            rows.append({"op": f"{name} forward", "ours_ms": _cpu_ms(
                lambda: cpu_ops.maxpool_forward(xin, L.size, L.stride, argmax=True), repeat), "torch_ms": t_f})
            P = F.max_pool2d(X, L.size, L.stride, ceil_mode=True)
            DP = torch.from_numpy(dy)
            rows.append({"op": f"{name} backward", "ours_ms": _cpu_ms(
                lambda: cpu_ops.maxpool_backward(dy, xin, y, L.size, L.stride, argmax=arg), repeat),
                "torch_ms": _cpu_ms(lambda: torch.autograd.grad(P, [X], DP, retain_graph=True), repeat)})
        elif L.kind == "fc":
            w, b = L.params["w"].value, L.params["b"].value
            X2 = X.detach().reshape(X.shape[0], -1).requires_grad_()
            W, B = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
            with torch.no_grad():
                t_f = _cpu_ms(lambda: F.linear(X2, W, B), repeat)
            x2 = xin.reshape(xin.shape[0], -1)
            rows.append({"op": f"{name} forward", "ours_ms": _cpu_ms(lambda: cpu_ops.fc_forward(x2, w, b), repeat),
                         "torch_ms": t_f})
            Y = F.linear(X2, W, B)
            DY = torch.from_numpy(dy)
            rows.append({"op": f"{name} backward", "ours_ms": _cpu_ms(
                lambda: (cpu_ops.fc_backward_filter(dy, x2), cpu_ops.fc_backward_data(dy, w), dy.sum(axis=0)), repeat),
                "torch_ms": _cpu_ms(lambda: torch.autograd.grad(Y, [X2, W, B], DY, retain_graph=True), repeat)})
    return rows


# --- workers --------------------------------------------------------------------

def worker(impl, cfg_name, state_path, batches_count, threads, warmup, data):
    """Serve `steps N` requests on stdin with {"seconds": t} lines on stdout, until EOF."""
    cfg = load_config(cfg_name)
    batches, _ = load_batches(cfg, batches_count, data)
    state = dict(np.load(state_path))
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
        step = torch_trainer(cfg, state, torch)[0]
        info = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    else:
        from convnet import cpu_ops
        cpu_ops.set_threads(threads)
        step = ours_trainer(cfg, state)[0]
        info = {"threads": cpu_ops.get_threads()}
    k = 0
    for _ in range(warmup):
        step(*batches[k % len(batches)])
        k += 1
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        t0 = time.perf_counter()
        for _ in range(n):
            loss = step(*batches[k % len(batches)])
            k += 1
        dt = time.perf_counter() - t0
        print(json.dumps({"seconds": dt, "loss": loss}), flush=True)


class Worker:
    def __init__(self, impl, args, state_path):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--config", args.config,
               "--state", state_path, "--batches", str(args.batches), "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--data", args.data]
        self.impl = impl
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def time(self, steps):
        self.proc.stdin.write(f"steps {steps}\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="fashion")
    p.add_argument("--steps", type=int, default=100, help="steps per timed block (default 100)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per worker first (default 10)")
    p.add_argument("--batches", type=int, default=100, help="distinct batches cycled through (default 100)")
    p.add_argument("--threads", type=int, default=available_cores(), help="threads for each (default: cores)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist (default) or random")
    p.add_argument("--no-torch", action="store_true", help="time ours alone")
    p.add_argument("--per-op", action="store_true",
                   help="also time each conv, pool and fc layer's ops against PyTorch's (one thread each, CPU ms)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("steps", "rounds", "batches", "threads"):
        if getattr(args, name) < 1:
            print(f"--{name} must be >= 1", file=sys.stderr)
            return 2
    if args.warmup < 0:
        print("--warmup must be >= 0", file=sys.stderr)
        return 2
    if args.worker:
        worker(args.worker, args.config, args.state, args.batches, args.threads, args.warmup, args.data)
        return 0
    cfg = load_config(args.config)
    torch, why = None, "--no-torch given"
    if not args.no_torch:
        try:
            import torch
        except Exception as e:
            torch, why = None, f"PyTorch is not importable ({common._one_line(e)})"
    batches, source = load_batches(cfg, args.batches, args.data)
    batch = len(batches[0][1])
    print(f"{args.config}: batch {batch}, {len(batches)} batches of the {source}; {args.threads} threads each")
    result = {"check": None}
    if torch is not None:
        torch.set_num_threads(args.threads)
        c = check(cfg, batches, torch)
        result["check"] = c
        print(f"check: loss ours {c['loss_ours']:.6f} torch {c['loss_torch']:.6f}; after one update "
              f"{c['loss2_ours']:.6f} / {c['loss2_torch']:.6f}; worst gradient rel. error "
              f"{c['grad_max_rel_err']:.2e} -> {'ok' if c['ok'] else 'FAIL'}")
        if not c["ok"]:
            print("FAIL: the two do not compute the same step; nothing timed")
            return 1
    else:
        print(f"PyTorch not timed: {why}")
    impls = ["ours"] + (["torch"] if torch is not None else [])
    _, net = ours_trainer(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        state_path = os.path.join(tmp, "state.npz")
        np.savez(state_path, **net.state_dict())
        workers = {impl: Worker(impl, args, state_path) for impl in impls}
        blocks = {impl: [] for impl in impls}
        loads = [os.getloadavg()[0]]
        try:
            for r in range(args.rounds):
                order = impls if r % 2 == 0 else impls[::-1]
                for impl in order:
                    blocks[impl].append(workers[impl].time(args.steps))
                loads.append(os.getloadavg()[0])
                line = "  ".join(f"{impl} {1e3 * blocks[impl][-1] / args.steps:6.2f} ms/step" for impl in impls)
                print(f"round {r + 1}/{args.rounds}: {line}  (load {loads[-1]:.2f})", flush=True)
        finally:
            for w in workers.values():
                w.close()
    rows = []
    for impl in impls:
        med = statistics.median(blocks[impl])
        rows.append({"impl": impl, "threads": workers[impl].info["threads"], "steps_per_block": args.steps,
                     "batch": batch, "ms_per_step": 1e3 * med / args.steps,
                     "images_per_s": batch * args.steps / med, "block_seconds": blocks[impl]})
    print()
    print(f"{'':6} {'ms/step':>8} {'img/s':>8}   (median of {args.rounds} blocks of {args.steps} steps)")
    for row in rows:
        print(f"{row['impl']:6} {row['ms_per_step']:8.2f} {row['images_per_s']:8.0f}")
    extra = {"config": args.config, "data": source, "load_average": loads, "check": result["check"],
             "torch": why if torch is None else None}
    if args.per_op and torch is not None:
        ops_rows = per_op(cfg, batches, torch)
        extra["per_op_one_thread_cpu_ms"] = ops_rows
        print(f"\n{'op (one thread each, CPU ms, fastest of 20)':46} {'ours':>7} {'torch':>7} {'ours/torch':>10}")
        for r in ops_rows:
            print(f"{r['op']:46} {r['ours_ms']:7.3f} {r['torch_ms']:7.3f} {r['ours_ms'] / r['torch_ms']:10.2f}")
        so, st = sum(r["ours_ms"] for r in ops_rows), sum(r["torch_ms"] for r in ops_rows)
        print(f"{'sum':46} {so:7.3f} {st:7.3f} {so / st:10.2f}")
    if torch is not None:
        ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
        per_round = [t / o for o, t in zip(blocks["ours"], blocks["torch"])]
        extra.update({"ratio_ours_to_torch": ratio, "ratio_per_round": per_round})
        print(f"ours / torch throughput: {ratio:.2f}x (per round: {', '.join(f'{q:.2f}' for q in per_round)})")
    print(f"load average (1 min) during the run: {min(loads):.2f} to {max(loads):.2f}")
    info = common.device_info(torch=None)
    info.update({"device": cpu_name(), "cores": available_cores(),
                 "torch": getattr(torch, "__version__", None)})
    path = common.write_results("cpu_throughput", info, rows, extra=extra, directory=args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
