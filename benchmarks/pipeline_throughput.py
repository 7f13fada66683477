"""How many images per second the input pipeline delivers from prepared shards,
next to how many one AlexNet training step consumes (on a GPU).

    python benchmarks/pipeline_throughput.py                 # a synthetic prepared set
    python benchmarks/pipeline_throughput.py --data data/imagenet --batches 50

Without --data it first writes a small prepared set (random JPEGs of 300 to
400 pixels, `python -m convnet.prepare` into a temporary folder) and reports
that rate too. Then, for each backend (numpy: the CPU augmentation; cuda:
uint8 crops copied to the GPU and augmented by kernels/augment.cu), it
iterates make_loader(train=True) with the paper's augmentation and reports
images/s after one warm-up batch. With a GPU it also times AlexNet training
steps (forward, loss, backward, SGD; batch --batch) and reports the images/s
they consume, so the two rates can be compared: the pipeline keeps up when its
rate is above the training rate. Without a GPU that part is skipped, and says so.
Rows also go to --out (default benchmarks/results/pipeline_throughput.txt)
with the device, commit and date.
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from convnet.data import load_dataset, make_loader  # noqa: E402
from convnet import prepare as prep                # noqa: E402


def gpu_name():
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:          # no CuPy, no driver, no device
        return None


def synthetic_set(folder, images, size, workers):
    """A tree of random JPEGs prepared at `size`; returns (prepared folder, images/s of prepare)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    src = os.path.join(folder, "src")
    for i in range(images):
        c = os.path.join(src, f"class{i % 10}")
        os.makedirs(c, exist_ok=True)
        w, h = rng.integers(300, 401, 2)
        # smooth random images: JPEG sizes and decode times like photographs, not like noise
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((int(w), int(h)), Image.Resampling.BILINEAR).save(
            os.path.join(c, f"{i:05d}.jpg"), quality=90)
    out = os.path.join(folder, "prepared")
    t = time.perf_counter()
    prep.prepare(src, out, size=size, workers=workers, shard_size=256, progress=False, log=lambda m: None)
    return out, images / (time.perf_counter() - t)


def pipeline_rate(ds, batch, batches, backend):
    """images/s of make_loader(train=True) over `batches` batches after one warm-up batch."""
    from convnet import backend as devices
    loader = make_loader(ds, batch, train=True, seed=0, epoch=0,
                         device=devices.cuda(0) if backend == "cuda" else devices.cpu())
    sync = (lambda: __import__("cupy").cuda.get_current_stream().synchronize()) if backend == "cuda" else (lambda: None)
    n, t = 0, None
    for b, (x, labels) in enumerate(loader):
        sync()
        if b == 0:
            t = time.perf_counter()       # the first batch pays for thread start and warm-up
        else:
            n += len(labels)
        if b >= batches:
            break
    loader.close()
    return (n / (time.perf_counter() - t) if n else float("nan")), loader.crop


def alexnet_rate(batch, steps, classes):
    """images/s consumed by AlexNet training steps on the GPU (forward, loss, backward, SGD)."""
    import cupy
    from convnet.net import Net
    from convnet.optim import SGD
    from convnet.configs import load_config
    cfg = load_config("alexnet")
    from convnet import backend as devices
    net = Net(cfg, devices=devices.cuda(0), seed=0)
    opt = SGD(net.params(), lr=0.01)
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32) * 0.1)
    labels = cupy.asarray(rng.integers(0, classes, batch).astype(np.int32))
    times = []
    for i in range(steps + 1):
        cupy.cuda.get_current_stream().synchronize()
        t = time.perf_counter()
        logits = net.forward(x, train=True)
        net.loss(logits, labels)
        net.backward()
        opt.step()
        cupy.cuda.get_current_stream().synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="a prepared folder (default: build a synthetic one)")
    ap.add_argument("--images", type=int, default=768, help="images of the synthetic set")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=10, help="timed batches per backend")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5, help="timed AlexNet steps")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "pipeline_throughput.txt"))
    args = ap.parse_args(argv)

    rows = []
    gpu = gpu_name()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data, rate = synthetic_set(tmp, args.images, args.size, args.workers)
            rows.append(f"prepare | {args.images} synthetic JPEGs 300-400 px -> {args.size} | "
                        f"{rate:.0f} images/s | {args.workers or os.cpu_count()} workers")
            print(rows[-1], flush=True)
        ds = load_dataset(data, "train")
        for backend in ["numpy"] + (["cuda"] if gpu else []):
            rate, crop = pipeline_rate(ds, args.batch, args.batches, backend)
            rows.append(f"pipeline {backend} | {len(ds)} images {ds.images.shape[1]}px -> "
                        f"batch {args.batch} x 3 x {crop} x {crop} | {rate:.0f} images/s")
            print(rows[-1], flush=True)
        if gpu:
            try:
                rate = alexnet_rate(args.batch, args.steps, len(ds.classes))
                rows.append(f"alexnet train step | batch {args.batch}, {len(ds.classes)} classes | "
                            f"{rate:.0f} images/s consumed")
            except Exception as e:      # the network code is another part: report, do not hide
                rows.append(f"alexnet train step | failed: {type(e).__name__}: {e}")
        else:
            rows.append("alexnet train step | skipped: no GPU (CuPy sees no CUDA device)")
        print(rows[-1], flush=True)

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    head = (f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | commit {commit} | "
            f"device {gpu or 'CPU only'} | {os.cpu_count()} cores")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
        f.write(head + "\n" + "".join(r + "\n" for r in rows))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
