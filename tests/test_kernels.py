"""Every kernel against its NumPy reference, table-driven.

One test per Case of every family (convnet.checking.all_cases): the "small"
cases on the CPU emulation, and the "small" and "alexnet" cases on the GPU
(marked gpu: skipped without a CUDA device). The worst normwise relative
error of each case is printed (pytest -s shows it).
"""
import pytest

from convnet import checking, kernels

SMALL = checking.all_cases("small")
# Built only where they can run: the AlexNet-sized inputs of some families
# take seconds and gigabytes to make.
ALEXNET = checking.all_cases("alexnet") if kernels.gpu_available() else []


def _check(case, backend):
    err, errs = checking.run_case(case, backend)
    print(f"{case.name} [{backend}]: worst error {err:.2e} (per output "
          f"{', '.join(f'{e:.1e}' for e in errs)}), tolerance {case.tol:.0e}")
    assert err <= case.tol, f"{case.name} on {backend}: error {err:.2e} > tolerance {case.tol:.0e}"


def test_every_family_has_small_cases():
    from convnet.kernel_ops import family_modules
    names = {c.name.split()[0] for c in SMALL}
    assert SMALL
    for mod in family_modules():
        assert mod.cases("small"), f"{mod.__name__} has no small cases"
        assert hasattr(mod, "cases") and callable(mod.cases)
    assert len(names) > 10


@pytest.mark.parametrize("case", SMALL, ids=[c.name for c in SMALL])
def test_small_on_emulation(case):
    _check(case, "emu")


@pytest.mark.gpu
@pytest.mark.parametrize("case", SMALL + ALEXNET, ids=[f"{c.scale}: {c.name}" for c in SMALL + ALEXNET])
def test_on_gpu(case):
    _check(case, "cuda")
