"""Package metadata; `pip install --no-build-isolation .` builds with the Makefile.

build_ext runs `make emu cpu kernels` (the CPU emulation extension convnet._emu,
the fast CPU path's loops convnet._cpu and, where nvcc exists, the fatbins) and puts into the package what the
loader (convnet/kernels.py) needs outside a checkout: the extension, the
kernel sources (convnet/_kernels/, for signatures and NVRTC) and the fatbins
(convnet/_fatbin/). No build isolation: make uses this Python's pybind11.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
    """requirements.txt without the GPU (extra "cuda"), test (extra "test") and tool packages."""
    reqs = []
    for line in open(os.path.join(HERE, "requirements.txt")):
        req = line.split("#")[0].strip()
        if req and not req.lower().startswith(("cupy", "pytest", "pybind11", "nvidia-cuda-")):
            reqs.append(req)
    return reqs


class MakeBuildExt(build_ext):
    def build_extension(self, ext):
        subprocess.check_call(["make", "-C", HERE, f"PYTHON={sys.executable}", "emu", "cpu", "kernels"])
        built = os.path.join(HERE, "convnet", ext.name.split(".")[-1] + sysconfig.get_config_var("EXT_SUFFIX"))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(built, target)
        pkg = os.path.dirname(target)
        for sub, pattern in [("_kernels", "kernels/*.cu*"), ("_fatbin", "build/kernels/*.fatbin")]:
            os.makedirs(os.path.join(pkg, sub), exist_ok=True)
            for f in glob.glob(os.path.join(HERE, pattern)):
                shutil.copy2(f, os.path.join(pkg, sub, os.path.basename(f)))


setup(
    name="convnet",
    version="0.1.0",
    description="AlexNet-family convolutional networks on hand-written CUDA kernels, "
                "with a CPU emulation of the CUDA execution model",
    packages=find_packages(include=["convnet", "convnet.*"]),
    python_requires=">=3.9",
    install_requires=requirements(),
    extras_require={"cuda": ["cupy-cuda13x>=13"], "test": ["pytest>=7"]},
    ext_modules=[Extension("convnet._emu", sources=[]), Extension("convnet._cpu", sources=[])],
    cmdclass={"build_ext": MakeBuildExt},
    zip_safe=False,
)
