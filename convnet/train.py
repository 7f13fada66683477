"""Train a network: `python -m convnet.train [options]`.

With no arguments it trains the default net (config "fashion") on
Fashion-MNIST, on a GPU when CuPy sees one and otherwise on the NumPy CPU
path, printing one line per epoch:

    epoch 3/4 | train loss 0.3012 | val top-1 10.21% top-5 0.31% | 812 img/s | lr 0.02 | 71 s

and writing checkpoints (last.ckpt every epoch, best.ckpt at the best
validation top-1 error) and a JSON-lines log (one line per `--log-every`
steps and one per epoch) into --checkpoint-dir.

Run state and exactness:
- the data order of epoch e comes from (seed, e) (convnet.data.make_loader);
  the dropout masks of step s from (seed, s) (Net.set_step); so the same
  seed on the CPU gives the same losses, and --resume continues exactly:
  a run of 2 epochs equals 1 epoch + resume for 1.
- Ctrl-C finishes the current step, saves last.ckpt (mid-epoch: it records
  the step and resume skips the batches already trained) and exits with a
  message, exit code 130; a second Ctrl-C aborts at once (mid-step or
  mid-save: nothing saved, the previous checkpoint stays). A Ctrl-C while
  starting exits 130 with one line, too.
- A NaN or infinite loss stops the run with exit code 1 and a message
  naming the step; the last good checkpoint is kept (a non-finite state is
  never written).
- The run folder (--checkpoint-dir) belongs to one run at a time: run.lock
  holds the owner's pid and host (a lock left by a dead run is taken over
  with a note). A new run refuses a folder holding another run's
  checkpoints unless --overwrite (then they are deleted first); --resume
  continues the run in it. last.ckpt is written before best.ckpt and names
  the best epoch, so a kill -9 between the two is repaired when the run
  resumes; log.jsonl is rewritten on resume to match the checkpoint (each
  epoch's line exactly once, step lines up to the checkpoint's step). No
  file is written through a symlink planted in its place.
- Errors (convnet/cli.py): one line naming the file and the problem; exit 2
  for bad input (a bad config, data or checkpoint, a folder where a file
  belongs), 1 for a failing machine (disk full, read-only) or a NaN loss.
- Images larger than the net's input are cropped (random crops, flips and
  PCA lighting in training, centre crops for validation: the paper's recipe).
- The validation split is the dataset's "val" split (for Fashion-MNIST and
  CIFAR-10, which ship none, the readers give the test split: the plateau
  schedule and best.ckpt then look at test data), or with --holdout N a
  fixed set of N training images kept out of training.
"""
import sys

if __name__ == "__main__":          # before the slow imports: Ctrl-C now is one line, exit 130
    from convnet import startup
    startup.guard("convnet.train")

import json
import math
import os
import signal
import time

import numpy as np

from convnet import checkpoint, cli, fsio
from convnet.cli import UsageError
from convnet.precision import PRECISIONS

PROG = "convnet.train"
DEFAULT_CONFIG = "fashion"
DEFAULT_DATA = "fashion-mnist"
DEFAULT_DIR = "runs/{config}"
# settings fixed by the run that made a checkpoint; --resume refuses to change them
EXIT_INTERRUPTED = 130          # the shell's code for a run stopped by Ctrl-C (SIGINT)
RUN_KEYS = ("config", "data", "batch_size", "lr", "seed", "lr_schedule", "train_limit", "val_limit",
            "holdout")
HOLDOUT_SEED = 20120101         # the held-out images do not depend on --seed
LOG = "log.jsonl"


def build_parser():
    p = cli.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help=f"config name or .py path (default {DEFAULT_CONFIG})")
    p.add_argument("--data", help=f"dataset name, folder or archive (default {DEFAULT_DATA})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "emu", "cuda"],
                   help="auto: GPU if CuPy sees one, else CPU (NumPy); emu: kernels on the CPU emulation")
    p.add_argument("--gpus", type=cli.int_list, help="GPU ids, e.g. 0,1 (columns go to GPUs in turn)")
    p.add_argument("--epochs", type=int, help="total epochs (default: the config's)")
    p.add_argument("--batch-size", type=int, help="default: the config's")
    p.add_argument("--lr", type=cli.positive_float, help="base learning rate (default: the config's)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--lr-schedule", choices=["plateau", "step", "constant"],
                   help="default: the config's (plateau: divide by 10 when validation stops improving)")
    p.add_argument("--lr-steps", type=cli.int_list,
                   help="epochs after which a 'step' schedule divides the lr by 10, e.g. 3,5")
    p.add_argument("--checkpoint-dir", help=f"default {DEFAULT_DIR} (or the --resume checkpoint's folder)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="a checkpoint file, or a folder holding last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a --checkpoint-dir that holds another run's checkpoints "
                        "(they and its log are deleted)")
    p.add_argument("--log", help="JSON-lines metrics log (default CHECKPOINT_DIR/log.jsonl)")
    p.add_argument("--log-every", type=cli.positive_int, default=50, help="steps between log lines")
    p.add_argument("--train-limit", type=cli.positive_int, help="use only the first N training images")
    p.add_argument("--val-limit", type=cli.positive_int, help="use only the first N validation images")
    p.add_argument("--holdout", type=cli.positive_int,
                   help="validate on N training images held out from training (a fixed choice) instead "
                        "of the dataset's val split (which for Fashion-MNIST and CIFAR-10 is the test set)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="conv and fc products: fp32, tf32 or bf16 (tensor cores); default fp32 (or the checkpoint's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # data parallelism (convnet/distributed.py, docs/data-parallel.md)
    p.add_argument("--data-parallel", action="store_true",
                   help="under mpirun -n K: each rank trains on its slice of every global batch "
                        "(--batch-size), gradients averaged over the ranks")
    p.add_argument("--dp-timeout", type=cli.positive_float,
                   help="seconds a rank waits for the others before aborting every rank (default 120)")
    p.add_argument("--dp-bucket-mb", type=cli.positive_float,
                   help="MiB of gradients per all-reduce bucket (default 8)")
    return p


# --------------------------------------------------------------------------
# Set-up (every failure here is bad input: one line, exit 2)

def _schedule_spec(hyper, args_schedule, lr_steps):
    spec = dict(hyper.get("lr_schedule") or {"type": "plateau"})
    if args_schedule and args_schedule != spec.get("type"):
        spec = {"type": args_schedule}
    if lr_steps is not None:
        if spec.get("type") != "step":
            raise UsageError("--lr-steps needs --lr-schedule step")
        spec["epochs"] = lr_steps
    if spec.get("type") == "step" and not spec.get("epochs"):
        raise UsageError("the step lr schedule needs --lr-steps (e.g. --lr-steps 3,5)")
    return spec


def make_schedule(spec, lr):
    from convnet import optim
    options = {k: v for k, v in spec.items() if k != "type"}
    try:
        return optim.make_schedule(spec.get("type", "plateau"), lr, **options)
    except (TypeError, ValueError) as e:
        raise UsageError(f"lr schedule {spec}: {e}") from None


# the types of a checkpoint's run settings: key -> (types, smallest value or None, may be None)
RUN_TYPES = {"config": ((str,), None, False), "data": ((str,), None, False), "batch_size": ((int,), 1, False),
             "lr": ((int, float), 0, False), "seed": ((int,), 0, False), "epochs": ((int,), 1, False),
             "lr_schedule": ((dict,), None, False), "train_limit": ((int,), 1, True),
             "val_limit": ((int,), 1, True), "holdout": ((int,), 1, True)}


def check_run(run, path):
    """UsageError naming the first run setting of a checkpoint with the wrong type."""
    for key, (types, low, optional) in RUN_TYPES.items():
        v = run.get(key)
        if v is None and optional:
            continue
        if isinstance(v, bool) or not isinstance(v, types) or (low is not None and not v >= low):
            raise UsageError(f"{path}: run setting {key!r} is {v!r}, not "
                             f"{'an integer' if types == (int,) else types[0].__name__}"
                             f"{f' >= {low}' if low is not None else ''}")


def resolve_settings(args):
    """The run's settings from the arguments, or from the checkpoint when resuming."""
    from convnet.configs import check_config, check_size, load_config
    resumed = None
    if args.resume:
        resumed = checkpoint.load(args.resume)
        run = dict(resumed.get("run") or {})
        if not run or not resumed.get("config"):
            raise UsageError(f"{args.resume}: not a training checkpoint (no run settings)")
        check_run(run, args.resume)
        check_config(resumed["config"], args.resume)
        check_size(resumed["config"], args.resume)     # a 2^40-wide layer: one line, nothing allocated
        for key in RUN_KEYS:
            given = getattr(args, key, None)
            if key == "lr_schedule" and given is not None:
                given = _schedule_spec(resumed["config"]["HYPER"], given, args.lr_steps)
            if given is not None and given != run.get(key):
                raise UsageError(f"--resume: --{key.replace('_', '-')} {given} differs from the checkpoint's "
                                 f"{run.get(key)}; start a new run to change it")
        cfg = resumed["config"]
        if args.epochs is not None:
            run["epochs"] = args.epochs
        if args.precision is not None:
            run["precision"] = args.precision
        run["checkpoint_dir"] = args.checkpoint_dir or (
            args.resume if os.path.isdir(args.resume) else os.path.dirname(os.path.abspath(args.resume)))
    else:
        name = args.config or DEFAULT_CONFIG
        cfg = load_config(name)                 # ConfigError (a ValueError): one line
        check_size(cfg, name)
        hyper = cfg["HYPER"]
        run = {"config": name, "data": args.data or DEFAULT_DATA,
               "batch_size": args.batch_size if args.batch_size is not None else int(hyper.get("batch_size", 128)),
               "lr": args.lr if args.lr is not None else float(hyper.get("lr", 0.01)),
               "seed": args.seed if args.seed is not None else 0,
               "epochs": args.epochs if args.epochs is not None else int(hyper.get("epochs", 10)),
               "lr_schedule": _schedule_spec(hyper, args.lr_schedule, args.lr_steps),
               "train_limit": args.train_limit, "val_limit": args.val_limit, "holdout": args.holdout,
               "precision": args.precision or "fp32",
               "checkpoint_dir": args.checkpoint_dir or DEFAULT_DIR.format(config=cfg["name"])}
    if run["batch_size"] <= 0:
        raise UsageError(f"--batch-size must be > 0, got {run['batch_size']}")
    if run["epochs"] < 1:
        raise UsageError(f"--epochs must be >= 1, got {run['epochs']}")
    run["log"] = args.log or os.path.join(run["checkpoint_dir"], LOG)
    return cfg, run, resumed


def _subset(ds, limit=None, index=None):
    """The first `limit` images of ds, or the images at `index`; same mean, classes and kind."""
    if index is None and (limit is None or limit >= len(ds)):
        return ds
    from convnet.data import Dataset
    if index is None:
        images, labels = np.asarray(ds.images[:limit]), np.asarray(ds.labels[:limit])
    else:
        images, labels = np.asarray(ds.images[index]), np.asarray(ds.labels[index])
    return Dataset(ds.name, ds.split, images, labels, ds.classes, mean=ds.mean, pca=ds.pca,
                   source=ds.source, prepared=ds.prepared)


def load_data(run):
    """(train, validation) datasets of the run (the mean image stays the whole train split's)."""
    from convnet.data import load_dataset
    train = load_dataset(run["data"], "train")
    holdout = run.get("holdout")
    if holdout:
        if holdout >= len(train):
            raise UsageError(f"--holdout {holdout}: the training split has only {len(train)} images")
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(train))
        val = _subset(train, index=np.sort(order[:holdout]))
        train = _subset(train, index=np.sort(order[holdout:]))
    else:
        val = load_dataset(run["data"], "val")
    return _subset(train, run["train_limit"]), _subset(val, run["val_limit"])


def input_shape(cfg):
    for layer in cfg["LAYERS"]:
        if layer.get("type") == "data":
            return tuple(layer["shape"])
    raise UsageError(f"config {cfg.get('name')}: no data layer")


def fit_config_to_data(cfg, ds):
    """Checks that the data fits the net's input; sets the output layer's width to the
    dataset's number of classes when they differ (returns a note saying so, else None)."""
    c, h, w = input_shape(cfg)
    hh, ww, cc = ds.shape
    if cc != c or hh < h or ww < w:
        raise UsageError(f"config '{cfg.get('name')}' takes {c}x{h}x{w} inputs but {ds.name} has "
                         f"{cc}x{hh}x{ww} images")
    if (hh != h or ww != w) and (hh != ww or h != w):
        raise UsageError(f"config '{cfg.get('name')}' takes {h}x{w} inputs, {ds.name} images are "
                         f"{hh}x{ww}: crops need square images and inputs")
    by_name = {L.get("name"): L for L in cfg["LAYERS"]}
    for L in cfg["LAYERS"]:
        if L.get("type") == "softmax_loss":
            src = L.get("inputs")
            src = by_name.get(src[0] if isinstance(src, list) else src, {})
            if src.get("type") == "fc" and int(src["outputs"]) != len(ds.classes):
                note = (f"{src['name']}: {src['outputs']} -> {len(ds.classes)} outputs, "
                        f"the number of classes of {ds.name}")
                src["outputs"] = len(ds.classes)
                return note
    return None


def build(cfg, run, devices):
    from convnet.net import Net
    from convnet.optim import SGD
    try:
        net = Net(cfg, devices=devices, seed=run["seed"], precision=run.get("precision", "fp32"))
    except (TypeError, ValueError) as e:
        raise UsageError(f"config '{cfg.get('name')}': {e}") from None
    hyper = cfg["HYPER"]
    opt = SGD(net.params(), lr=run["lr"], momentum=float(hyper.get("momentum", 0.9)),
              weight_decay=float(hyper.get("weight_decay", 0.0005)))
    schedule = make_schedule(run["lr_schedule"], run["lr"])
    return net, opt, schedule


# --------------------------------------------------------------------------
# The loop

class Stop(Exception):
    """The run cannot go on; str(e) says why (exit 1)."""


def evaluate_loader(net, loader):
    """(top-1 errors, top-5 errors, images) of net over a loader (train=False)."""
    from convnet import reference
    from convnet.backend import to_host
    top1 = top5 = n = 0
    for x, labels in loader:
        if len(labels) == 0:            # a data-parallel rank's empty slice of a short last batch
            continue
        logits = to_host(net.forward(x, train=False))
        labels = to_host(labels)
        k5 = min(5, logits.shape[1])
        top1 += reference.topk_errors(logits, labels, 1)
        top5 += reference.topk_errors(logits, labels, k5)
        n += len(labels)
    return top1, top5, n


class Interrupt:
    """SIGINT -> a flag checked between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self.count = 0                          # SIGINTs received
        self._old = None

    def _handler(self, signum, frame):
        self.count += 1
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{PROG}: interrupted: finishing this step and saving (Ctrl-C again to abort "
              "without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:          # not the main thread: plain KeyboardInterrupt
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    def __init__(self, cfg, run, devices, resumed=None, progress=True, on_step=None, out=print,
                 comm=None, dp_bucket_mb=None):
        self.cfg, self.run, self.devices = cfg, run, devices
        self.comm = comm                        # data parallelism: a convnet.distributed communicator
        self.root = comm is None or comm.is_root    # rank 0 alone writes checkpoints and logs
        self.progress = progress and self.root
        self.on_step = on_step                  # callback(trainer) after every step (tests)
        self.out = out
        self.train_ds, self.val_ds = load_data(run)
        self.note = fit_config_to_data(cfg, self.train_ds)   # before the net is built from cfg
        if resumed is not None and self.note:
            raise UsageError(f"--resume: the data no longer fits the checkpoint's net ({self.note})")
        self.net, self.opt, self.schedule = build(cfg, run, devices)
        self.dp = None
        if comm is not None:
            from convnet import distributed
            self.dp = distributed.DataParallel(comm, self.net, dp_bucket_mb or distributed.DEFAULT_BUCKET_MB)
        self.epoch = 0                          # epochs completed
        self.step_in_epoch = 0                  # batches of epoch self.epoch + 1 already trained
        self.global_step = 0
        self.metrics = []
        self.partial = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}   # the unfinished epoch's sums
        self.best = math.inf
        self.pending = []                       # (step, epoch, batch, loss on the device, images)
        self.best_epoch = None
        self.in_step = False                    # True while the state is being changed (not saveable)
        if resumed is not None:
            self._restore(resumed)
        self.dir = run["checkpoint_dir"]
        self.lock = None
        self._log_file = None
        self.notes = []                         # what open_folder did that the user should know

    # -- the run folder ----------------------------------------------------------
    def open_folder(self, resume_path=None, overwrite=False):
        """Take the run folder: lock it, refuse (or with overwrite, clear) another run's
        checkpoints, remove a killed save's temporaries, repair best.ckpt, rewrite the log.
        Data parallel: rank 0 alone (the other ranks write nothing)."""
        if not self.root:
            return
        _make_folder(self.dir, "--checkpoint-dir")
        self.lock = checkpoint.RunLock(self.dir)
        if self.lock.note:
            self.notes.append(self.lock.note)
        last = os.path.join(self.dir, checkpoint.LAST)
        theirs = [n for n in (checkpoint.LAST, checkpoint.BEST) if os.path.lexists(os.path.join(self.dir, n))]
        same = resume_path is not None and os.path.lexists(last) and _same_file(resume_path, self.dir)
        if theirs and not same:
            if not overwrite:
                epoch = (checkpoint.peek(os.path.join(self.dir, theirs[0])) or {}).get("epoch", "?")
                how = (f"continue it with --resume {self.dir}" if resume_path is None
                       else "resume into another --checkpoint-dir")
                raise UsageError(f"{self.dir}: holds another run's checkpoints ({', '.join(theirs)}, epoch "
                                 f"{epoch}); {how}, or pass --overwrite to delete them and start there")
            for n in theirs:
                os.unlink(os.path.join(self.dir, n))
            self.notes.append(f"--overwrite: deleted {', '.join(theirs)} of the previous run in {self.dir}")
        removed = checkpoint.remove_stale_temporaries(self.dir)     # left by a kill -9 mid-save
        if removed:
            self.notes.append(f"{self.dir}: removed {len(removed)} temporary file(s) of an interrupted save")
        if resume_path is not None and same:
            note = checkpoint.repair_best(self.dir)
            if note:
                self.notes.append(note)
        log = self.run["log"]
        _make_folder(os.path.dirname(os.path.abspath(log)), "--log's folder")
        fsio.write_atomic(log, self._log_text(log) if resume_path is not None else b"")
        self._log_file = fsio.open_append(log)

    def _log_text(self, log):
        """The log as it must be for the resumed state: the step lines up to global_step and
        each finished epoch's line (from the checkpoint's metrics) exactly once, in order."""
        old = []
        if os.path.isfile(log) and not os.path.islink(log):
            try:
                text = fsio.read_regular(log).decode("utf-8", "replace")
            except OSError:
                text = ""
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:              # a line torn by a kill
                    continue
                if isinstance(rec, dict) and rec.get("type") == "step" and isinstance(rec.get("step"), int) \
                        and rec["step"] <= self.global_step and isinstance(rec.get("epoch"), int):
                    old.append(rec)
        epochs = [m for m in self.metrics if isinstance(m.get("epoch"), int)]
        out = []
        for rec in old:
            while epochs and epochs[0]["epoch"] < rec["epoch"]:
                out.append(epochs.pop(0))
            out.append(rec)
        out += epochs
        return "".join(json.dumps(r) + "\n" for r in out).encode()

    def close(self):
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- state ---------------------------------------------------------------
    def _restore(self, state):
        try:
            self.net.load_state_dict(state["net"])
            self.opt.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"--resume: the checkpoint does not fit the network: {e}") from None
        self.opt.lr = self.schedule.lr
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        self.metrics = list(state.get("metrics") or [])
        self.partial = dict(state.get("partial") or self.partial)
        self.best = min([m["val_top1"] for m in self.metrics] or [math.inf])
        self.best_epoch = state.get("best_epoch")

    def state(self):
        return checkpoint.make_state(
            self.net, self.opt, self.epoch, rng={"seed": self.run["seed"], "global_step": self.global_step},
            metrics=self.metrics, config=self.cfg, run=self.run, schedule=self.schedule.state_dict(),
            step_in_epoch=self.step_in_epoch, global_step=self.global_step, partial=dict(self.partial),
            best_epoch=self.best_epoch)

    def save(self, best=False):
        """last.ckpt (and best.ckpt); an OSError says the previous checkpoint is kept."""
        self.settle()
        if self.dp is not None:
            from convnet import distributed
            distributed.check_same_weights(self.comm, self.net)
            if not self.root:
                return None
        try:
            return checkpoint.save_run(self.dir, self.state(), best=best)
        except OSError as e:
            raise OSError(e.errno, f"cannot save the checkpoint ({e.strerror}); the previous one is kept",
                          e.filename or os.path.join(self.dir, checkpoint.LAST)) from None

    def log(self, record):
        if not self.root:
            return
        if self._log_file is None:              # Trainer used without open_folder (tests)
            self._log_file = fsio.open_append(self.run["log"])
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()

    def _loader(self, ds, train, epoch):
        """Images of the net's input size as they are (prepared sets: the loader's flips and
        lighting); larger images: the paper's random crops of the input size, flips and
        PCA lighting when training, centre crops for validation."""
        from convnet.data import Augment, make_loader
        size = input_shape(self.cfg)[1]
        options = self.cfg["HYPER"].get("augment") or {}       # e.g. {"lighting": 0.0}
        augment = Augment(crop=size, **options) if ds.shape[0] > size else None
        shard = (self.comm.rank, self.comm.size) if self.comm is not None else None
        return make_loader(ds, self.run["batch_size"], train=train, seed=self.run["seed"], epoch=epoch,
                           augment=augment, device=self.net.devices[0], shard=shard)

    # -- loop ------------------------------------------------------------------
    def train(self, interrupt):
        """Run the remaining epochs. Raises Stop (NaN loss or state) or KeyboardInterrupt (Ctrl-C)."""
        total = self.run["epochs"]
        while self.epoch < total:
            if interrupt.requested:
                raise KeyboardInterrupt
            e = self.epoch + 1
            loader = self._loader(self.train_ds, True, self.epoch)
            n_batches = len(loader)
            bar = None
            if self.progress:
                from tqdm import tqdm
                bar = tqdm(total=n_batches, initial=self.step_in_epoch, desc=f"epoch {e}/{total}",
                           leave=False, unit="batch", file=sys.stderr, disable=None)
            t0 = time.perf_counter()
            try:
                for b, (x, labels) in enumerate(loader):
                    if b < self.step_in_epoch:          # resumed mid-epoch: already trained
                        continue
                    self.in_step = True
                    rows = loader.rows(b)               # (lo, hi, images of the global batch)
                    loss = self.train_step(x, labels, rows)
                    self.global_step += 1
                    self.step_in_epoch = b + 1
                    self.pending.append((self.global_step, e, b + 1, loss, rows[2]))
                    self.in_step = False
                    log_now = self.global_step % self.run.get("log_every", 50) == 0
                    # GPU: read the losses on the host only every log_every steps, at the end of
                    # the epoch and before a save; elsewhere every step (it costs nothing there)
                    if (log_now or b + 1 == n_batches or interrupt.requested or self.on_step is not None
                            or self.net.devices[0].kind != "cuda"):
                        loss = self.settle()
                        if bar is not None:
                            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    if bar is not None:
                        bar.update(1)
                    if log_now:
                        self.log({"type": "step", "epoch": e, "step": self.global_step, "batch": b + 1,
                                  "loss": loss, "lr": self.opt.lr, "time": time.time()})
                    if self.on_step is not None:
                        self.on_step(self)
                    if interrupt.requested:
                        raise KeyboardInterrupt
            finally:
                self.partial["seconds"] += time.perf_counter() - t0
                if bar is not None:
                    bar.close()
            self.end_epoch(e, total)

    def train_step(self, x, labels, rows=None):
        """One step; returns the loss as it lies on the device (read later by settle()).
        Data parallel: rows = (lo, hi, n) of the global batch; the loss is the global batch's."""
        self.net.set_step(self.global_step)
        if self.dp is not None:
            return self.dp.train_step(self.net, self.opt, x, labels, rows)
        logits = self.net.forward(x, train=True)
        loss = self.net.loss(logits, labels, sync=False)
        self.net.backward()
        self.opt.step()
        return loss

    def settle(self):
        """Reads the losses of the steps since the last call on the host (one synchronization),
        adds them to the epoch's sums, and returns the last; a non-finite one raises Stop naming
        its step (nothing after it is ever saved: the last good checkpoint stays)."""
        last = math.nan
        for step, e, b, value, n in self.pending:
            last = float(value)
            if not math.isfinite(last):
                self.pending = []
                raise Stop(f"loss is {last} at step {step} (epoch {e}, batch {b}); "
                           f"training stopped, last good checkpoint: {self._last_good()}")
            self.partial["loss_sum"] += last * n
            self.partial["images"] += n
        self.pending = []
        return last

    def end_epoch(self, e, total):
        self.settle()
        t0 = time.perf_counter()
        top1, top5, n = evaluate_loader(self.net, self._loader(self.val_ds, False, 0))
        if self.comm is not None:               # each rank evaluated its slices
            top1, top5, n = self.comm.sum_ints(top1, top5, n)
        val_seconds = time.perf_counter() - t0
        images, seconds = self.partial["images"], self.partial["seconds"]
        m = {"type": "epoch", "epoch": e, "train_loss": self.partial["loss_sum"] / max(images, 1),
             "val_top1": top1 / max(n, 1), "val_top5": top5 / max(n, 1), "val_images": n,
             "images_per_s": images / seconds if seconds > 0 else 0.0, "lr": self.opt.lr,
             "train_seconds": seconds, "val_seconds": val_seconds, "time": time.time()}
        self.in_step = True
        is_best = m["val_top1"] < self.best
        self.best = min(self.best, m["val_top1"])
        if is_best:
            self.best_epoch = e
        self.opt.lr = self.schedule.end_epoch(m["val_top1"])
        self.metrics.append(m)
        self.epoch, self.step_in_epoch = e, 0
        self.partial = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        self.in_step = False
        try:
            self.save(best=is_best)
        except checkpoint.NonFiniteStateError as err:
            raise Stop(f"{err} after epoch {e}; training stopped, last good checkpoint: "
                       f"{self._last_good()}") from None
        self.log(m)
        self.out(f"epoch {e}/{total} | train loss {m['train_loss']:.4f} | val top-1 {100 * m['val_top1']:.2f}% "
                 f"top-5 {100 * m['val_top5']:.2f}% | {m['images_per_s']:.0f} img/s | lr {m['lr']:g} | "
                 f"{seconds + val_seconds:.0f} s")

    def _last_good(self):
        path = os.path.join(self.dir, checkpoint.LAST)
        return path if os.path.exists(path) else "none (no epoch finished)"


def main(argv=None, on_step=None, out=print):
    """The command; returns the exit code. on_step(trainer): called after each step (tests)."""
    code = cli.run(PROG, lambda: _main(argv, on_step, out))
    if code != cli.EXIT_OK:
        from convnet import distributed
        distributed.abort_job(code)         # --data-parallel under mpirun: end every rank now
    return code


def _main(argv, on_step, out):
    args = build_parser().parse_args(argv)
    try:
        cfg, run, resumed = resolve_settings(args)
        run["log_every"] = args.log_every
        devices = cli.resolve_device(args.device, args.gpus)
        comm = None
        if args.data_parallel:
            from convnet import distributed
            comm = distributed.init(args.dp_timeout or distributed.DEFAULT_TIMEOUT)
            if not comm.is_root:
                out = _quiet
        elif args.dp_timeout is not None or args.dp_bucket_mb is not None:
            raise UsageError("--dp-timeout and --dp-bucket-mb need --data-parallel")
        trainer = Trainer(cfg, run, devices, resumed, progress=not args.no_progress,
                          on_step=on_step, out=out, comm=comm, dp_bucket_mb=args.dp_bucket_mb)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("while setting up; nothing trained, nothing saved") from None
    try:
        trainer.open_folder(args.resume, args.overwrite)
        for note in trainer.notes:
            out(f"note: {note}")
        return _train(trainer, args, cfg, run, resumed, devices, out)
    finally:
        trainer.close()


def _train(trainer, args, cfg, run, resumed, devices, out):
    if resumed is not None:
        out(f"resuming {args.resume}: epoch {trainer.epoch + 1}, step {trainer.global_step}")
    if trainer.epoch >= run["epochs"]:
        out(f"nothing to do: the checkpoint has {trainer.epoch} epochs, --epochs is {run['epochs']}")
        return cli.EXIT_OK
    out(trainer.net.summary())
    if trainer.dp is not None:
        out(trainer.dp.describe())
    if trainer.note:
        out(trainer.note)
    out(f"training '{cfg['name']}' on {run['data']} ({len(trainer.train_ds)} train, {len(trainer.val_ds)} val "
        f"images) on {', '.join(d.name for d in devices)}, "
        f"batch {run['batch_size']}, {run['epochs']} epochs; checkpoints in {trainer.dir}")
    # overflow on the way to a NaN loss is reported once, by the NaN check, not as warnings
    with Interrupt() as interrupt, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            trainer.train(interrupt)
        except Stop as e:
            if trainer.comm is not None and not trainer.root:
                return cli.EXIT_FAILED          # the same Stop on every rank: rank 0 says why
            return cli.report(PROG, e, cli.EXIT_FAILED)
        except KeyboardInterrupt:
            if interrupt.count >= 2:
                return cli.report(PROG, f"aborted; nothing saved, the last checkpoint is {trainer._last_good()}",
                                  EXIT_INTERRUPTED)
            return _save_interrupted(trainer)
    best = min(m["val_top1"] for m in trainer.metrics)
    out(f"done: best val top-1 error {100 * best:.2f}%; checkpoints {trainer.dir}/{checkpoint.LAST}, "
        f"{checkpoint.BEST}; log {run['log']}")
    out(f"curves: python -m convnet.show curves {trainer.dir}   (a PNG of loss, errors and lr)")
    return cli.EXIT_OK


def _quiet(*args, **kwargs):
    """`out` of the data-parallel ranks other than 0."""


def _save_interrupted(trainer):
    """Ctrl-C: save the state as of the last whole step, unless it stopped mid-step."""
    last = os.path.join(trainer.dir, checkpoint.LAST)
    if trainer.in_step:
        return cli.report(PROG, f"aborted in the middle of step {trainer.global_step + 1}; nothing saved, "
                          f"the last checkpoint is {trainer._last_good()}", EXIT_INTERRUPTED)
    try:
        trainer.save()
    except Stop as e:
        return cli.report(PROG, e, cli.EXIT_FAILED)
    except checkpoint.NonFiniteStateError as e:
        return cli.report(PROG, f"interrupted; {e}; the last good checkpoint is kept", cli.EXIT_FAILED)
    except KeyboardInterrupt:                   # a second Ctrl-C during the save
        return cli.report(PROG, f"aborted during the save; the last checkpoint is {trainer._last_good()}",
                          EXIT_INTERRUPTED)
    except OSError as e:
        return cli.report(PROG, f"interrupted; {cli.describe_os_error(e)}", cli.EXIT_FAILED)
    print(f"{PROG}: interrupted at epoch {trainer.epoch + 1}, step {trainer.global_step}; saved {last} "
          f"(continue with --resume {last})", file=sys.stderr)
    return EXIT_INTERRUPTED


def _make_folder(path, what):
    """os.makedirs with one-line errors for a file in the way."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"{path}: {what} is {fsio.kind_of(path)}, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{path}: {what} cannot be created (a file is in the way)") from None
    except NotADirectoryError:
        raise UsageError(f"{path}: {what} cannot be created (a file is in the way on its path)") from None


def _same_file(resume_path, directory):
    """True when the --resume checkpoint is one of the run folder's own files."""
    path = resume_path if not os.path.isdir(resume_path) else os.path.join(resume_path, checkpoint.LAST)
    return os.path.abspath(os.path.dirname(os.path.abspath(path))) == os.path.abspath(directory) or any(
        os.path.exists(os.path.join(directory, n)) and os.path.samefile(path, os.path.join(directory, n))
        for n in (checkpoint.LAST, checkpoint.BEST))


if __name__ == "__main__":
    from convnet import startup
    startup.finish(main())
