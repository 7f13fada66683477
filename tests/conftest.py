"""Shared test set-up: the repository root on sys.path, and the `gpu` marker.

Mark a test `@pytest.mark.gpu` when it needs a CUDA device; it is skipped when
CuPy is missing or sees no device.
"""
import functools
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@functools.lru_cache(maxsize=None)
def gpu_available():
    """True when CuPy imports and reports at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:      # no CuPy, no driver, no device: all mean "no GPU"
        return False


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
