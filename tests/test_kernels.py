"""Every kernel against its NumPy reference, table-driven.

One test per Case of every family (convnet.checking.all_cases): the "small"
cases on the CPU emulation, and the "small" and "alexnet" cases on the GPU
(marked gpu: skipped without a CUDA device). The worst normwise relative
error of each case is printed (pytest -s shows it).
"""
import pytest

from convnet import backend as devices
from convnet import checking, kernels

SMALL = checking.all_cases("small")
# Built only where they can run: the AlexNet-sized inputs of some families
# take seconds and gigabytes to make.
ALEXNET = checking.all_cases("alexnet") if kernels.gpu_available() else []


def _check(case, backend):
    err, errs = checking.run_case(case, backend)
    print(f"{case.name} [{backend.name}]: worst error {err:.2e} (per output "
          f"{', '.join(f'{e:.1e}' for e in errs)}), tolerance {case.tol:.0e}")
    assert err <= case.tol, f"{case.name} on {backend}: error {err:.2e} > tolerance {case.tol:.0e}"


def test_every_family_has_small_cases():
    from convnet.kernel_ops import family_modules
    assert SMALL
    for mod in family_modules():
        assert mod.cases("small"), f"{mod.__name__} has no small cases"


def test_every_kernel_is_exercised_by_a_small_case():
    import os
    from convnet import kernel_sig
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    names = {sig.name for sig in kernel_sig.parse_dir(src)}
    covered = set()
    for c in SMALL:
        covered |= set(c.kernels or [c.name.split()[0]])
    assert names, "no kernels found in kernels/*.cu"
    assert not names - covered, f"kernels with no check: {sorted(names - covered)}"


@pytest.mark.parametrize("case", SMALL, ids=[c.name for c in SMALL])
def test_small_on_emulation(case):
    _check(case, devices.emu())


@pytest.mark.gpu
@pytest.mark.parametrize("case", SMALL + ALEXNET, ids=[f"{c.scale}: {c.name}" for c in SMALL + ALEXNET])
def test_on_gpu(case):
    _check(case, devices.cuda(0))
