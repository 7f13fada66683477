"""The ThreadSanitizer emulation (`make emu-tsan`): planted races between the threads
of a block are reported with their .cu lines, their race-free twins and shipped
kernels are not. Skipped unless the TSan build exists (it takes ~40 s to build;
`make tsan-check` runs every kernel case under it)."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tsan_check  # noqa: E402

pytestmark = [pytest.mark.tsan,
              pytest.mark.skipif(not any(tsan_check.TSAN_DIR.glob("_emu_test*.so"))
                                 or tsan_check.libtsan() is None,
                                 reason="no ThreadSanitizer build (make emu-tsan) or no libtsan")]

# (kernel, its flag, block size, a race expected) -- tests/emu_kernels/race.cu
CASES = [("test_race_global", 1, 64, True), ("test_race_global", 0, 64, False),
         ("test_race_shared", 0, 64, True), ("test_race_shared", 1, 64, False),
         ("test_race_warp", 0, 32, True), ("test_race_warp", 1, 32, False),
         ("test_race_atomic", None, 64, False)]

CODE = """
import sys
import numpy as np
from convnet import kernels
L = kernels.Library(kernels.TEST_KERNEL_DIR, emu_module='convnet._emu_test')
for name, flag, n in CASES:
    print('@@ case', name, flag, file=sys.stderr, flush=True)
    f = L.get_function(name, like='emu')
    if name == 'test_race_global':
        out = np.zeros(1, np.int32); f(1, n, (out, flag))
    elif name == 'test_race_atomic':
        out = np.zeros(1, np.int32); f(2, n, (out,)); assert out[0] == 2 * n, out
    else:
        out = np.zeros(2 * n, np.float32); f(2, n, (out, flag))
        if flag:   # with the barrier / __syncwarp: each thread reads its neighbour's id
            if name == 'test_race_shared':
                assert (out == (np.arange(2 * n) % n + 1) % n).all(), out
            else:  # test_race_warp writes out[threadIdx.x] in both blocks
                assert (out[:n] == (np.arange(n) + 1) % 32).all(), out
print('@@ end', file=sys.stderr, flush=True)
"""


def _line(path, text):
    return next(i + 1 for i, s in enumerate(open(ROOT / path)) if text in s)


def test_planted_races_are_reported_with_their_lines():
    cases = [(k, f, n) for k, f, n, _ in CASES]
    r = tsan_check.run(["-c", f"CASES = {cases!r}\n" + CODE], timeout=300)
    assert "@@ end" in r.stderr, r.stderr[-3000:]
    parts = re.split(r"^@@ case (\S+) (\S+)$", r.stderr.split("@@ end")[0], flags=re.M)[1:]
    found = {(parts[i], parts[i + 1]): tsan_check.races(parts[i + 2]) for i in range(0, len(parts), 3)}
    src = "tests/emu_kernels/race.cu"
    expected_lines = {"test_race_global": [_line(src, "out[0] = (int)threadIdx.x")],
                      "test_race_shared": [_line(src, "s[t] = (float)t"), _line(src, "s[(t + 1) % blockDim.x]")],
                      "test_race_warp": [_line(src, "s[lane] = (float)lane"), _line(src, "s[(lane + 1) % 32]")]}
    for name, flag, _, racy in CASES:
        reports = found[(name, str(flag))]
        if not racy:
            assert reports == [], f"{name} flag={flag}: {reports[0][2][:2000] if reports else ''}"
            continue
        assert reports, f"{name} flag={flag}: no race reported"
        kind, summary, text = reports[0]
        assert kind == "data race" and src in summary
        for line in expected_lines[name]:
            assert f"{src}:{line}" in text, text[:3000]
    assert r.returncode == 66          # TSan's exit code: it reported


def test_shipped_kernels_with_barriers_and_warp_operations_are_clean():
    """A few shipped kernels that share memory between threads (barriers, shuffles)."""
    r = tsan_check.run(["-m", "convnet.check", "--backend", "emu", "--shapes", "small", "--only",
                        "conv2d_fwd_v3", "sgemm_v2", "softmax_fwd", "conv2d_bwd_bias_v2"], timeout=600)
    assert tsan_check.races(r.stderr) == [], [t[:1500] for _, _, t in tsan_check.races(r.stderr)][:2]
    assert "Traceback" not in r.stderr and tsan_check.failed_checks(r.stdout) == [], r.stdout[-2000:]
    passed = [l.split()[0] for l in r.stdout.splitlines() if " PASS" in l]
    assert {"conv2d_fwd_v3", "sgemm_v2", "softmax_fwd", "conv2d_bwd_bias_v2"} <= set(passed), r.stdout[-2000:]
