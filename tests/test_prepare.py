"""python -m convnet.prepare on a hostile tree: every good image prepared
(with the right orientation, colours and transparency), every bad one in the
report, never a crash; resume after an interruption; one-line errors with
exit status 2; mean image and PCA against the prepared pixels."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from convnet import prepare as prep
from convnet.data import DataError, load_dataset, make_loader
from convnet.data.images import decode_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def halves(w, h, left, right):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2:] = right
    return a


def png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                + chunk(b"IEND", b""))


def make_tree(root):
    """Two classes of good images in every format and mode, and every kind of bad file.
    Returns (good paths by class, bad paths)."""
    rng = np.random.default_rng(0)
    a, b = os.path.join(root, "apple"), os.path.join(root, "banana")
    os.makedirs(a)
    os.makedirs(b)
    good = {"apple": [], "banana": []}

    def save(cls, name, im, **kw):
        p = os.path.join(root, cls, name)
        im.save(p, **kw)
        good[cls].append(p)
        return p

    for i in range(5):   # plain RGB JPEGs, landscape and portrait
        w, h = (48, 36) if i % 2 else (36, 50)
        save("apple", f"rgb{i}.jpg", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), quality=90)
    # palette PNG with a transparent index covering the top half -> white there
    p = np.zeros((40, 40), np.uint8)
    p[20:] = 1
    im = Image.fromarray(p, "P")
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    save("apple", "palette.png", im, transparency=0)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:, 20:, 3] = 255                                # right half opaque blue, left transparent
    save("apple", "rgba.png", Image.fromarray(rgba, "RGBA"))
    sixteen = np.zeros((40, 40), np.uint16)
    sixteen[:, :20] = 65535
    sixteen[:, 20:] = 32896                              # 128 * 257
    save("apple", "grey16.png", Image.fromarray(sixteen))
    save("apple", "grey.bmp", Image.fromarray(np.full((40, 40), 77, np.uint8), "L"))
    save("banana", "cmyk.jpg", Image.new("CMYK", (40, 40), (255, 0, 0, 0)), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6                                     # orientation: rotate 90 degrees clockwise
    save("banana", "rotated.jpg", Image.fromarray(halves(60, 40, (255, 0, 0), (0, 0, 255))), exif=exif, quality=95)
    frames = [Image.new("RGB", (40, 40), (0, 255, 0)), Image.new("RGB", (40, 40), (255, 0, 255))]
    save("banana", "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    save("banana", "photo.tiff", Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)))
    save("banana", "photo.webp", Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), lossless=True)
    save("banana", "noext", Image.fromarray(np.full((40, 40, 3), 9, np.uint8)), format="PNG")

    bad = {}
    jpg = os.path.join(a, "rgb0.jpg")
    data = open(jpg, "rb").read()
    bad[os.path.join(b, "truncated.jpg")] = "truncated"
    open(os.path.join(b, "truncated.jpg"), "wb").write(data[: len(data) // 2])
    bad[os.path.join(b, "empty.jpg")] = "zero-byte"
    open(os.path.join(b, "empty.jpg"), "wb").close()
    bad[os.path.join(b, "notes.jpg")] = "not an image"
    open(os.path.join(b, "notes.jpg"), "w").write("this is text, not a JPEG\n")
    bad[os.path.join(a, "tiny.png")] = "too small"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(os.path.join(a, "tiny.png"))
    os.makedirs(os.path.join(a, "folder.jpg"))
    bad[os.path.join(a, "folder.jpg")] = "directory"
    os.symlink("loop.jpg", os.path.join(a, "loop.jpg"))   # a link to itself
    bad[os.path.join(a, "loop.jpg")] = "unreadable"
    png_header_only(os.path.join(b, "bomb.png"), 50000, 50000)
    bad[os.path.join(b, "bomb.png")] = "decompression bomb"
    return good, bad


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src = os.path.join(root, "src")
    good, bad = make_tree(src)
    out = os.path.join(root, "out")
    logs = []
    meta = prep.prepare(src, out, size=SIZE, workers=2, shard_size=4, progress=False, log=logs.append)
    return src, out, good, bad, meta, logs


def test_every_good_image_prepared(hostile):
    src, out, good, bad, meta, logs = hostile
    n_good = sum(len(v) for v in good.values())
    assert meta["splits"]["train"]["count"] == n_good
    ds = load_dataset(out, "train")
    assert ds.prepared and ds.classes == ["apple", "banana"]
    assert ds.images.shape == (n_good, SIZE, SIZE, 3) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [len(good["apple"]), len(good["banana"])]
    assert "skipped" in logs[-1]


def test_every_bad_file_reported(hostile):
    src, out, good, bad, meta, logs = hostile
    report = json.load(open(os.path.join(out, "report.json")))["skipped"]
    reasons = {r["path"]: r["reason"] for r in report}
    assert set(reasons) == set(bad)
    for path, word in bad.items():
        assert word in reasons[path], (path, reasons[path])
    text = open(os.path.join(out, "report.txt")).read()
    assert all(p in text for p in bad)
    assert meta["skipped"] == len(bad)


def test_conversions(hostile):
    """Orientation, transparency on white, 16-bit scaling, CMYK, first GIF frame."""
    src, out, good, bad, meta, logs = hostile
    d = {os.path.basename(p): decode_image(p, size=SIZE) for ps in good.values() for p in ps}
    pal = d["palette.png"].astype(int)
    assert (pal[2, 2] == 255).all()                                # transparent -> white
    assert np.abs(pal[-3, 3] - [200, 10, 10]).max() <= 2
    rgba = d["rgba.png"].astype(int)
    assert (rgba[5, 2] == 255).all() and np.abs(rgba[5, -3] - [0, 0, 255]).max() <= 2
    g16 = d["grey16.png"].astype(int)
    assert (g16[5, 2] == 255).all() and np.abs(g16[5, -3] - 128).max() <= 1
    assert (d["grey.bmp"] == 77).all()
    assert np.abs(d["cmyk.jpg"][16, 16].astype(int) - [0, 255, 255]).max() <= 8
    rot = d["rotated.jpg"].astype(int)                             # red on top after the rotation
    assert rot[2, 16, 0] > 200 and rot[2, 16, 2] < 50
    assert rot[-3, 16, 2] > 200 and rot[-3, 16, 0] < 50
    assert (d["anim.gif"][16, 16] == [0, 255, 0]).all()
    assert (d["noext"] == 9).all()


def test_prepared_pixels_are_the_decoded_images(hostile):
    src, out, good, bad, meta, logs = hostile
    ds = load_dataset(out, "train")
    want = {decode_image(p, size=SIZE).tobytes() for ps in good.values() for p in ps}
    assert {ds.images[i].tobytes() for i in range(len(ds))} == want


def test_mean_and_pca(hostile):
    src, out, good, bad, meta, logs = hostile
    ds = load_dataset(out, "train")
    x = np.asarray(ds.images).astype(np.float64)
    np.testing.assert_allclose(ds.mean, x.mean(axis=0), rtol=0, atol=1e-4)
    cov = np.cov(x.reshape(-1, 3), rowvar=False, bias=True)
    vals, vecs = ds.pca
    np.testing.assert_allclose(vecs @ np.diag(vals) @ vecs.T, cov, rtol=1e-4, atol=1e-3 * cov.max())
    assert vals[0] >= vals[1] >= vals[2] >= 0


def test_rerun_skips_and_settings_are_checked(hostile, tmp_path):
    src, out, good, bad, meta, logs = hostile
    msgs = []
    again = prep.prepare(src, out, size=SIZE, workers=1, shard_size=4, progress=False, log=msgs.append)
    assert again == meta and "already prepared" in msgs[0]
    with pytest.raises(DataError, match="different settings.*size"):
        prep.prepare(src, out, size=SIZE + 1, workers=1, shard_size=4, progress=False, log=msgs.append)


def test_resume_after_interruption(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for c in range(3):
        os.makedirs(src / f"c{c}")
        for i in range(5):
            Image.new("RGB", (20 + i, 20), (40 * c, 10 * i, 7)).save(src / f"c{c}" / f"{i}.png")
    clean = tmp_path / "clean"
    prep.prepare(str(src), str(clean), size=16, workers=1, shard_size=4, progress=False, log=lambda m: None)

    real = prep._write_shard
    calls = []

    def interrupted(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[2])
        return real(*args, **kw)
    monkeypatch.setattr(prep, "_write_shard", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(str(src), str(out), size=16, workers=1, shard_size=4, progress=False, log=lambda m: None)
    assert not (out / "meta.json").exists()
    assert sorted(p.name for p in out.glob("*.done")) == ["train-00000.done", "train-00001.done"]
    (out / "train-00002.npy").write_bytes(b"half a shard from the interrupted run")
    monkeypatch.setattr(prep, "_write_shard", real)
    msgs = []
    prep.prepare(str(src), str(out), size=16, workers=1, shard_size=4, progress=False, log=msgs.append)
    assert msgs[0] == "resuming: 2 of 4 shards already done"
    a, b = load_dataset(str(clean)), load_dataset(str(out))
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.mean, b.mean)


def test_val_tree_and_loader(tmp_path):
    src, val = tmp_path / "train", tmp_path / "val"
    for root, n in ((src, 6), (val, 2)):
        for c in ("x", "y"):
            os.makedirs(root / c)
            for i in range(n):
                Image.new("RGB", (300, 280), (i * 30, 100 if c == "x" else 0, 50)).save(root / c / f"{i}.png")
    out = tmp_path / "out"
    prep.prepare(str(src), str(out), val=str(val), size=256, workers=1, progress=False, log=lambda m: None)
    tr, te = load_dataset(str(out), "train"), load_dataset(str(out), "test")
    assert len(tr) == 12 and len(te) == 4 and te.split == "val"
    assert np.array_equal(te.mean, tr.mean)
    loader = make_loader(tr, 5, train=True, seed=3)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 2] and len(loader) == 3
    assert batches[0][0].shape == (5, 3, 227, 227) and batches[0][0].dtype == np.float32
    xs = [x for x, _ in make_loader(te, 3, train=False)]
    assert xs[0].shape == (3, 3, 227, 227)


def test_one_line_errors(tmp_path, capsys):
    empty_tree = tmp_path / "none"
    os.makedirs(empty_tree)
    assert prep.main([str(empty_tree), str(tmp_path / "o1"), "--quiet"]) == 2
    assert "no class folders" in capsys.readouterr().err
    os.makedirs(tmp_path / "t" / "full")
    os.makedirs(tmp_path / "t" / "hollow")
    Image.new("RGB", (40, 40)).save(tmp_path / "t" / "full" / "a.png")
    assert prep.main([str(tmp_path / "t"), str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "hollow: empty class folder" in err and err.count("\n") == 1
    os.makedirs(tmp_path / "junk" / "c")
    open(tmp_path / "junk" / "c" / "x.jpg", "w").write("no")
    assert prep.main([str(tmp_path / "junk"), str(tmp_path / "o3"), "--quiet"]) == 2
    assert "no readable image" in capsys.readouterr().err
    os.makedirs(tmp_path / "v" / "other")
    Image.new("RGB", (40, 40)).save(tmp_path / "v" / "other" / "a.png")
    os.makedirs(tmp_path / "t" / "hollow" / "sub")
    Image.new("RGB", (40, 40)).save(tmp_path / "t" / "hollow" / "sub" / "b.png")
    assert prep.main([str(tmp_path / "t"), str(tmp_path / "o4"), "--val", str(tmp_path / "v"), "--quiet"]) == 2
    assert "class folders differ" in capsys.readouterr().err


def test_command_line_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "convnet.prepare", str(tmp_path / "missing"), str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not a folder" in r.stderr


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    """SIGINT to the whole process group (Ctrl-C) while the pool works: exit 130, one
    line, no worker tracebacks, no process left; the rerun resumes."""
    import signal
    import time
    rng = np.random.default_rng(0)
    for c in range(2):
        os.makedirs(tmp_path / "src" / f"c{c}")
        for i in range(200):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((200, 160)).save(
                tmp_path / "src" / f"c{c}" / f"{i}.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "convnet.prepare", str(tmp_path / "src"), str(out), "--size", "64",
           "--shard-size", "8", "--workers", "2", "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not list(out.glob("*.done")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGINT)
    rc = p.wait(timeout=60)
    err = p.stderr.read()
    if rc == 0:
        pytest.skip("the run finished before the signal arrived")
    assert rc == 130 and err == "prepare: interrupted; run the same command again to resume\n"
    done = len(list(out.glob("*.done")))
    assert 1 <= done < 50 and not (out / "meta.json").exists()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"resuming: {done} of 50 shards already done" in r.stdout
    assert len(load_dataset(str(out))) == 400
