"""Prepare an image-folder dataset for training: python -m convnet.prepare SRC OUT

    python -m convnet.prepare ~/imagenet/train data/imagenet --val ~/imagenet/val
    python -m convnet.prepare cifar10/train data/cifar10-32 --val cifar10/test --size 32

SRC (and --val VALSRC) hold one subfolder per class (ImageNet train layout,
the CIFAR-10 folders, any ImageFolder tree; the validation tree must have the
same class folders). Every image is decoded with Pillow (convnet/data/images.py
lists the conversions: EXIF orientation, grey/CMYK/palette/16-bit to 8-bit
RGB, transparency composited on white), its shorter side rescaled to --size
and its central square kept. The images are written in packed uint8 shards
that the loader memory-maps, with the labels, the class names, the mean
image and the RGB PCA of the training pixels (docs/data-format.md).

- Parallel over --workers processes (default: all cores), chunks of images,
  with a progress bar.
- Resumable: each shard is written atomically and then marked done; a rerun
  with the same arguments skips finished shards; a rerun with different
  arguments (or a changed file list) into the same OUT is refused. Ctrl-C,
  SIGTERM and errors remove the temporary file being written; the
  temporaries a kill -9 left are removed when the next run starts.
- Bad files never stop the run: unreadable, truncated, zero-byte or non-image
  files, images whose shorter side is under --min-side pixels (default
  size // 8: upscaling more than 8x invents the image) and images over
  --max-pixels (decompression bombs) are skipped and listed with the reason
  in OUT/report.json and OUT/report.txt (one "path<TAB>reason" line per
  file, escaped like a Python string literal without its quotes: a
  backslash, tab, newline, carriage return or other control character in a
  name is written as two backslashes, backslash-t, -n, -r or backslash-x
  and two hex digits, and so is a byte that is not UTF-8; so every line is
  one file). FIFOs, sockets and devices named like images are skipped,
  never opened.
- A tree with no class folders, an empty class folder, class folders that
  differ between SRC and VALSRC, or no readable image at all: one line on
  stderr, exit status 2; a failure of the machine (disk full, read-only OUT):
  one line, exit status 1; Ctrl-C: exit status 130 (convnet/cli.py).
"""
import argparse
import collections
import hashlib
import json
import os
import signal
import stat
import sys

if __name__ == "__main__":          # before the slow imports: Ctrl-C now is one line, exit 130
    from convnet import startup
    startup.guard("prepare")

import numpy as np

from convnet import cli, fsio
from convnet.data import format as fmt
from convnet.data.dataset import pca_from_moments
from convnet.data.errors import DataError
from convnet.data.images import MAX_PIXELS, ImageError, decode_image, is_image_name

CONFIG = "config.json"
CHUNK = 16                      # images per task sent to a worker


# --------------------------------------------------------------------------
# Listing

def scan_tree(root):
    """(items [(path, class index)], classes, skipped [(path, reason)]) of a class-per-folder tree."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder")
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{root}: cannot list ({e.strerror or e})") from None
    if not classes:
        raise DataError(f"{root}: no class folders (expected one subfolder per class)")
    items, skipped = [], []
    for ci, c in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, c), followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                if is_image_name(d):
                    skipped.append((os.path.join(dirpath, d), "a directory named like an image"))
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
        if not found:
            raise DataError(f"{os.path.join(root, c)}: empty class folder")
        items += [(p, ci) for p in found]
    return items, classes, skipped


# --------------------------------------------------------------------------
# Workers

def pixel_moments(image):
    """Exact (rgb_sum (3,), rgb_ss (3, 3) = sum of x x^T) of one uint8 (H, W, 3) image, as float64.

    Products in uint16 summed in uint64 are exact; so are the float64 sums of
    these integers while below 2^53 (about 700,000 images of 256 x 256)."""
    planes = [np.ascontiguousarray(image[..., i]).ravel() for i in range(3)]
    s = np.array([p.sum(dtype=np.uint64) for p in planes], np.float64)
    ss = np.empty((3, 3), np.float64)
    for i in range(3):
        for j in range(i, 3):
            ss[i, j] = ss[j, i] = np.multiply(planes[i], planes[j], dtype=np.uint16).sum(dtype=np.uint64)
    return s, ss


def decode_chunk(task):
    """Worker: decode a chunk of paths.

    Returns ([(uint8 (size, size, 3) or None, reason or None)], stats or None);
    stats (with_stats): float64 sums over the chunk's good images -- "sum" (size, size, 3),
    "rgb_sum" (3,), "rgb_ss" (3, 3), "pixels"."""
    paths, size, min_side, max_pixels, with_stats = task
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(f"{fsio.kind_of(p)}, not a regular file")
            if st.st_size == 0:
                raise ImageError("zero-byte file")
            out.append((decode_image(p, size=size, max_pixels=max_pixels, min_side=min_side), None))
        except ImageError as e:
            out.append((None, str(e)))
        except OSError as e:
            out.append((None, f"unreadable: {e.strerror or e}"))
    stats = None
    if with_stats:
        stats = _empty_stats(size)
        for img, _ in out:
            if img is not None:
                stats["sum"] += img
                s, ss = pixel_moments(img)
                stats["rgb_sum"] += s
                stats["rgb_ss"] += ss
                stats["pixels"] += img.shape[0] * img.shape[1]
    return out, stats


def _empty_stats(size):
    return {"sum": np.zeros((size, size, 3), np.float64), "rgb_sum": np.zeros(3, np.float64),
            "rgb_ss": np.zeros((3, 3), np.float64), "pixels": 0}


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)       # the parent's terminate() ends a worker


class _Inline:
    """A Pool stand-in for --workers 1: runs tasks in this process."""

    def imap(self, fn, tasks, chunksize=1):
        return map(fn, tasks)

    def terminate(self):
        pass

    def join(self):
        pass


# --------------------------------------------------------------------------
# Writing

def _atomic(path, write):
    fsio.write_atomic(path, write=write)


def _write_json(path, obj):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def _read_json(path):
    """A JSON file we wrote, or None when missing, not a regular file or unreadable."""
    try:
        return json.loads(fsio.read_regular(path))
    except (OSError, ValueError):
        return None


def _write_shard(out, split, index, images, labels, skipped, stats):
    img_name, lab_name, done_name = fmt.shard_names(split, index)
    images = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    _atomic(os.path.join(out, img_name), lambda f: np.save(f, images))
    _atomic(os.path.join(out, lab_name), lambda f: np.save(f, np.asarray(labels, np.int32)))
    if stats is not None:
        arrays = dict(stats, pixels=np.int64(stats["pixels"]))
        _atomic(os.path.join(out, _stats_name(split, index)), lambda f: np.savez(f, **arrays))
    _write_json(os.path.join(out, done_name), {"count": len(labels), "skipped": skipped})


def _stats_name(split, index):
    return f"{split}-{index:05d}-stats.npz"


def _done(out, split, index):
    """The shard's done marker, or None when the shard must be (re)written: no marker, or a
    train shard whose stats file does not load as plain arrays."""
    done = _read_json(os.path.join(out, fmt.shard_names(split, index)[2]))
    if not isinstance(done, dict) or not isinstance(done.get("count"), int) \
            or not isinstance(done.get("skipped"), list):
        return None
    if split == "train" and done["count"] and _load_stats(out, split, index) is None:
        return None
    return done


def _load_stats(out, split, index):
    """The stats arrays of a train shard (plain arrays only: allow_pickle=False), or None."""
    path = os.path.join(out, _stats_name(split, index))
    if not fsio.is_regular(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = {k: np.asarray(z[k], np.float64) for k in ("sum", "rgb_sum", "rgb_ss")}
            stats["pixels"] = int(z["pixels"])
        return stats
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------
# The command

def _config(args, train_items, val_items):
    h = hashlib.sha1()
    for items in (train_items, val_items):
        for path, label in items:
            h.update(os.fsencode(path) + f"\t{label}\n".encode())
        h.update(b"--\n")
    return {"format": fmt.FORMAT, "version": fmt.VERSION, "src": os.path.abspath(args.src),
            "val": os.path.abspath(args.val) if args.val else None, "size": args.size,
            "shard_size": args.shard_size, "min_side": args.min_side, "max_pixels": args.max_pixels,
            "seed": args.seed, "files": len(train_items) + len(val_items), "files_sha1": h.hexdigest()}


def prepare(src, out, val=None, size=256, workers=None, shard_size=1024, min_side=None,
            max_pixels=MAX_PIXELS, seed=0, progress=True, log=print):
    """Prepare SRC (and VAL) into OUT; returns the meta dict. DataError on bad input."""
    args = argparse.Namespace(src=src, val=val, size=int(size), shard_size=int(shard_size),
                              min_side=int(min_side) if min_side is not None else max(1, int(size) // 8),
                              max_pixels=int(max_pixels), seed=int(seed))
    if args.size < 1:
        raise DataError(f"--size {size}: must be at least 1")
    if args.shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: must be at least 1")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise DataError(f"--workers {workers}: must be at least 1")

    train_items, classes, skipped_dirs = scan_tree(src)
    val_items = []
    if val is not None:
        val_items, val_classes, val_skipped = scan_tree(val)
        if val_classes != classes:
            missing = sorted(set(classes) - set(val_classes))
            extra = sorted(set(val_classes) - set(classes))
            raise DataError(f"{val}: class folders differ from {src}'s "
                            f"(missing {missing[:3] or 'none'}, extra {extra[:3] or 'none'})")
        skipped_dirs += val_skipped
    # the shards mix the classes: reading them in order is already shuffled, and any
    # prefix of either split (a --train-limit / --val-limit subset) holds every class
    perm = np.random.default_rng(args.seed).permutation(len(train_items))
    train_items = [train_items[i] for i in perm]
    perm = np.random.default_rng(args.seed + 1).permutation(len(val_items))
    val_items = [val_items[i] for i in perm]
    config = _config(args, train_items, val_items)

    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    stale = fsio.remove_temporaries(out)
    if stale:
        log(f"{out}: removed {len(stale)} temporary file(s) an interrupted run left")
    cpath = os.path.join(out, CONFIG)
    if os.path.lexists(cpath):
        old = _read_json(cpath)
        if old != config:
            diff = [k for k in config if old is None or old.get(k) != config[k]]
            raise DataError(f"{out}: holds a preparation with different settings ({', '.join(diff)}); "
                            "use another folder or delete it")
        if os.path.exists(os.path.join(out, fmt.META)):
            log(f"{out}: already prepared with these settings")
            return fmt.read_meta(out)
    else:
        _write_json(cpath, config)

    splits = [("train", train_items)] + ([("val", val_items)] if val_items else [])
    plan = []           # (split, shard index, items)
    for split, items in splits:
        for i in range(0, len(items), args.shard_size):
            plan.append((split, i // args.shard_size, items[i:i + args.shard_size]))
    pending = [p for p in plan if _done(out, p[0], p[1]) is None]
    if len(pending) < len(plan):
        log(f"resuming: {len(plan) - len(pending)} of {len(plan)} shards already done")

    _run(out, pending, args, workers, progress)
    return _finalize(out, plan, classes, args, skipped_dirs, log)


def _tasks(pending, args):
    for split, index, items in pending:
        paths = [p for p, _ in items]
        for i in range(0, len(paths), CHUNK):
            yield paths[i:i + CHUNK], args.size, args.min_side, args.max_pixels, split == "train"


def _run(out, pending, args, workers, progress):
    if not pending:
        return
    from tqdm import tqdm
    total = sum(len(items) for _, _, items in pending)
    if workers > 1:
        import multiprocessing
        # workers ignore Ctrl-C: the parent stops them (terminate) and says how to resume
        pool = multiprocessing.Pool(min(workers, max(1, total // CHUNK + 1)), initializer=_ignore_sigint)
    else:
        pool = _Inline()
    bar = tqdm(total=total, unit="img", desc="prepare", disable=not progress, file=sys.stderr)
    try:
        results = pool.imap(decode_chunk, _tasks(pending, args), chunksize=1)
        for split, index, items in pending:
            images, labels, skipped = [], [], []
            stats = _empty_stats(args.size) if split == "train" else None
            for start in range(0, len(items), CHUNK):
                chunk = items[start:start + CHUNK]
                decoded, chunk_stats = next(results)
                if stats is not None:
                    for k in stats:
                        stats[k] += chunk_stats[k]
                for (path, label), (img, reason) in zip(chunk, decoded):
                    if img is None:
                        skipped.append([path, reason])
                    else:
                        images.append(img)
                        labels.append(label)
                bar.update(len(chunk))
            _write_shard(out, split, index, images, labels, skipped, stats)
    finally:
        bar.close()
        pool.terminate()
        pool.join()


def _finalize(out, plan, classes, args, skipped_dirs, log):
    splits = collections.OrderedDict()
    skipped = [[p, r] for p, r in skipped_dirs]
    total = np.zeros((args.size, args.size, 3), np.float64)
    rgb_sum, rgb_ss, pixels, n_train = np.zeros(3), np.zeros((3, 3)), 0, 0
    for split, index, _ in plan:
        done = _done(out, split, index)
        if done is None:
            raise DataError(f"{out}: shard {split} {index} is not finished")
        skipped += done["skipped"]
        if done["count"] == 0:
            continue
        img_name, lab_name, _ = fmt.shard_names(split, index)
        s = splits.setdefault(split, {"count": 0, "shards": []})
        s["shards"].append({"images": img_name, "labels": lab_name, "count": done["count"]})
        s["count"] += done["count"]
        if split == "train":
            z = _load_stats(out, split, index)
            if z is None:
                raise DataError(f"{os.path.join(out, _stats_name(split, index))}: unreadable; run the same "
                                "command again to redo its shard")
            total += z["sum"]
            rgb_sum += z["rgb_sum"]
            rgb_ss += z["rgb_ss"]
            pixels += z["pixels"]
            n_train += done["count"]
    _write_report(out, skipped)
    if n_train == 0:
        raise DataError(f"{args.src}: no readable image (every file skipped, see {os.path.join(out, 'report.txt')})")
    mean = (total / n_train).astype(np.float32)
    _atomic(os.path.join(out, fmt.MEAN), lambda f: np.save(f, mean))
    vals, vecs = pca_from_moments(pixels, rgb_sum, rgb_ss)
    meta = {"format": fmt.FORMAT, "version": fmt.VERSION, "name": os.path.basename(os.path.normpath(out)),
            "size": args.size, "channels": 3, "classes": classes, "splits": splits, "mean": fmt.MEAN,
            "pca": {"eigenvalues": vals.tolist(), "eigenvectors": vecs.tolist(), "pixels": pixels},
            "skipped": len(skipped), "report": "report.json"}
    _write_json(os.path.join(out, fmt.META), meta)
    counts = " + ".join(f"{s['count']} {name}" for name, s in splits.items())
    log(f"prepared {counts} images of {args.size}x{args.size} into {out}"
        + (f"; {len(skipped)} skipped, see {os.path.join(out, 'report.txt')}" if skipped else ""))
    return meta


def escape(text):
    r"""Any text as one line of report.txt: \\ \t \n \r for backslash, tab, newline, CR;
    \xNN for other control characters and for bytes that are not UTF-8 (os.fsdecode's
    surrogate escapes)."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _write_report(out, skipped):
    rows = [{"path": p, "reason": r} for p, r in skipped]
    _write_json(os.path.join(out, "report.json"), {"skipped": rows})
    text = "".join(f"{escape(p)}\t{escape(r)}\n" for p, r in skipped) or "no file skipped\n"
    _atomic(os.path.join(out, "report.txt"), lambda f: f.write(text.encode("utf-8", "backslashreplace")))


def main(argv=None):
    ap = cli.ArgumentParser(prog="python -m convnet.prepare", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="training tree: one subfolder per class")
    ap.add_argument("out", help="output folder (created; rerun to resume)")
    ap.add_argument("--val", help="validation tree with the same class folders")
    ap.add_argument("--size", type=int, default=256, help="output side in pixels (default 256)")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    ap.add_argument("--shard-size", type=int, default=1024, help="images per shard file (default 1024)")
    ap.add_argument("--min-side", type=int, default=None, help="skip images whose shorter side is smaller "
                    "(default size // 8)")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="skip larger images as "
                    f"decompression bombs (default {MAX_PIXELS})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training shards' order")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")

    def body():
        a = ap.parse_args(argv)
        old_term = _terminate_as_interrupt()
        try:
            prepare(a.src, a.out, val=a.val, size=a.size, workers=a.workers, shard_size=a.shard_size,
                    min_side=a.min_side, max_pixels=a.max_pixels, seed=a.seed, progress=not a.quiet)
        except KeyboardInterrupt:
            raise KeyboardInterrupt("run the same command again to resume") from None
        finally:
            _restore_term(old_term)
        return cli.EXIT_OK

    return cli.run("prepare", body)


def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt, so the clean-up of Ctrl-C (temporaries removed) runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:              # not the main thread
        return None


def _restore_term(old):
    if old is not None:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    from convnet import startup
    startup.finish(main())
