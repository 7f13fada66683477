"""Install the Python dependencies that do not import yet.

Reads requirements.txt; for each requirement, tries to import the module it
provides and installs only the missing ones with pip. On the GPU machine
everything imports already and nothing touches the network.
"""
import importlib
import subprocess
import sys

# distribution name -> module it provides
MODULES = {"pillow": "PIL", "cupy-cuda13x": "cupy", "pybind11": "pybind11"}


def main(path):
    missing = []
    for line in open(path):
        req = line.split("#")[0].strip()
        if not req:
            continue
        name = req.split(">")[0].split("=")[0].split("<")[0].strip()
        module = MODULES.get(name.lower(), name.replace("-", "_"))
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(req)
        except Exception as e:  # e.g. a CuPy that imports but finds no CUDA
            print(f"note: {module} imports with an error ({e}); leaving it as it is")
    if not missing:
        print("python dependencies: all present")
        return 0
    print("installing:", " ".join(missing))
    return subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
