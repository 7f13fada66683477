"""Install the Python dependencies that do not import yet.

Reads requirements.txt; for each requirement, tries to import the module it
provides and installs only the missing ones with pip. On the GPU machine
everything imports already and nothing touches the network.

Tools (distributions in TOOLS: the CUDA disassemblers from PyPI, for
benchmarks/static_model.py) are optional: skipped when the program is already
found (on the PATH, in /usr/local/cuda/bin or in an installed wheel), and a
failed install of one (no network) is a note, not an error.
"""
import glob
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

# distribution name -> module it provides
MODULES = {"pillow": "PIL", "cupy-cuda13x": "cupy", "pybind11": "pybind11"}
# optional tool distribution -> the program it provides
TOOLS = {"nvidia-cuda-cuobjdump": "cuobjdump", "nvidia-cuda-nvdisasm": "nvdisasm"}


def tool_found(program):
    if shutil.which(program) or os.path.exists(f"/usr/local/cuda/bin/{program}"):
        return True
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        if glob.glob(os.path.join(base, "*", "bin", program)):
            return True
    return False


def main(path):
    missing, tools = [], []
    for line in open(path):
        req = line.split("#")[0].strip()
        if not req:
            continue
        name = req.split(">")[0].split("=")[0].split("<")[0].strip()
        if name.lower() in TOOLS:
            if not tool_found(TOOLS[name.lower()]):
                tools.append(req)
            continue
        module = MODULES.get(name.lower(), name.replace("-", "_"))
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(req)
        except Exception as e:  # e.g. a CuPy that imports but finds no CUDA
            print(f"note: {module} imports with an error ({e}); leaving it as it is")
    if tools:
        print("installing tools (optional):", " ".join(tools))
        rc = subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--retries", "0",
                              "--timeout", "10", *tools])
        if rc:
            print("note: the optional tools did not install (no network?): "
                  "benchmarks/static_model.py will say it skips")
    if not missing:
        print("python dependencies: all present")
        return 0
    print("installing:", " ".join(missing))
    return subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
