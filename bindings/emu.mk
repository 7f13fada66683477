# CPU emulation of the CUDA kernels (included by the top-level Makefile).
#
#   make emu        convnet/_emu$(EXT)       kernels/*.cu            + the runtime
#                   convnet/_emu_test$(EXT)  tests/emu_kernels/*.cu  + the runtime
#   make emu-asan   the same two, built with AddressSanitizer, in build/asan/convnet/
#                   (load them with CONVNET_EMU_DIR=build/asan/convnet and
#                   LD_PRELOAD=$$(gcc -print-file-name=libasan.so))
#   make emu-tsan   the same two with ThreadSanitizer, in build/tsan/convnet/: the
#                   kernels instrumented (-fsanitize=thread -g), the runtime not,
#                   but telling TSan about the fibers, barriers and warp operations
#                   (emu_runtime.cpp, CN_EMU_TSAN). Load them with
#                   CONVNET_EMU_DIR=build/tsan/convnet,
#                   LD_PRELOAD=$$(gcc -print-file-name=libtsan.so), and
#                   CONVNET_EMU_THREADS=1 (tools/tsan_check.py does all that)
#
# Each .cu is compiled by g++ as C++17 with bindings/cuda_emu.h force-included
# into its own object (touching one kernel recompiles one object; a header
# change recompiles them all). bindings/gen_registry.py writes the launch
# registry (one thunk per extern "C" __global__ kernel) from the same sources.

EMU_EXT     := $(shell $(PYTHON) -c 'import sysconfig;print(sysconfig.get_config_var("EXT_SUFFIX"))')
EMU_PYINC    = $(shell $(PYTHON) -m pybind11 --includes)
EMU_TSRC    := $(sort $(wildcard tests/emu_kernels/*.cu))
EMU_THDR    := $(wildcard tests/emu_kernels/*.cuh)
EMU_HDR     := bindings/cuda_emu.h bindings/emu_runtime.h
EMU_GEN     := bindings/gen_registry.py convnet/kernel_sig.py

EMU_WARN    := -Wall -Wno-unknown-pragmas -Wno-unused-function -Wno-sign-compare
EMU_CXX     := $(CXX) -std=c++17 -fPIC -fvisibility=hidden -fno-strict-aliasing $(EMU_WARN)
# kernels: C++ with the emulation header force-included
EMU_KERNEL  := -x c++ -include bindings/cuda_emu.h -DCN_EMULATION=1 -Ikernels -Wno-unused-variable \
               -Wno-unused-but-set-variable

EMU_OPT     := -O2
ASAN_OPT    := -O1 -g -fsanitize=address -fno-omit-frame-pointer
TSAN_OPT    := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
TSAN_RT_OPT := -O1 -g -DCN_EMU_TSAN=1

# The registry must be rewritten when a source file appears or goes away, not
# only when one changes: keep the lists of sources in files that change then.
$(shell mkdir -p $(BUILD)/emu; \
  echo '$(KSRC)' | cmp -s - $(BUILD)/emu/kernels.list || echo '$(KSRC)' > $(BUILD)/emu/kernels.list; \
  echo '$(EMU_TSRC)' | cmp -s - $(BUILD)/emu/test_kernels.list || echo '$(EMU_TSRC)' > $(BUILD)/emu/test_kernels.list)

$(BUILD)/emu/registry.cpp: $(KSRC) $(EMU_GEN) $(BUILD)/emu/kernels.list
	$(PYTHON) bindings/gen_registry.py $@ kernels
$(BUILD)/emu/test_registry.cpp: $(EMU_TSRC) $(EMU_GEN) $(BUILD)/emu/test_kernels.list
	$(PYTHON) bindings/gen_registry.py $@ tests/emu_kernels

# $(1): object directory, $(2): compiler options (kernels, link), $(3): directory of
# the two extensions, $(4): more options for the pybind11 module (the slowest to
# compile), $(5): options for the runtime, module and registry (default: $(2))
define EMU_VARIANT
$(1)/kernels/%.o: kernels/%.cu $(EMU_HDR) $(KHDR)
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(2) $$(EMU_KERNEL) -c $$< -o $$@
$(1)/test_kernels/%.o: tests/emu_kernels/%.cu $(EMU_HDR) $(KHDR) $(EMU_THDR)
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(2) $$(EMU_KERNEL) -Itests/emu_kernels -c $$< -o $$@
$(1)/emu_runtime.o: bindings/emu_runtime.cpp $(EMU_HDR)
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(or $(5),$(2)) -c $$< -o $$@
$(1)/emu_module.o: bindings/emu_module.cpp $(EMU_HDR) | $(BUILD)/deps.stamp
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(or $(5),$(2)) $(4) $$(EMU_PYINC) -c $$< -o $$@
$(1)/mark_begin.o: bindings/emu_shared_mark.cpp
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(or $(5),$(2)) -DCN_EMU_MARK_BEGIN -c $$< -o $$@
$(1)/mark_end.o: bindings/emu_shared_mark.cpp
	@mkdir -p $$(dir $$@)
	$$(EMU_CXX) $(or $(5),$(2)) -c $$< -o $$@
$(1)/registry.o: $(BUILD)/emu/registry.cpp $(EMU_HDR)
	$$(EMU_CXX) $(or $(5),$(2)) -Ibindings -c $$< -o $$@
$(1)/test_registry.o: $(BUILD)/emu/test_registry.cpp $(EMU_HDR)
	$$(EMU_CXX) $(or $(5),$(2)) -Ibindings -c $$< -o $$@
# (link order matters: the kernel objects' .tbss lies between the two marks)
$(3)/_emu$(EMU_EXT): $(1)/emu_runtime.o $(1)/emu_module.o $(1)/registry.o $(1)/mark_begin.o \
                     $(patsubst kernels/%.cu,$(1)/kernels/%.o,$(KSRC)) $(1)/mark_end.o
	@mkdir -p $$(dir $$@)
	$$(CXX) $(2) -shared -o $$@ $$^ -lpthread
$(3)/_emu_test$(EMU_EXT): $(1)/emu_runtime.o $(1)/emu_module.o $(1)/test_registry.o $(1)/mark_begin.o \
                          $(patsubst tests/emu_kernels/%.cu,$(1)/test_kernels/%.o,$(EMU_TSRC)) $(1)/mark_end.o
	@mkdir -p $$(dir $$@)
	$$(CXX) $(2) -shared -o $$@ $$^ -lpthread
endef

$(eval $(call EMU_VARIANT,$(BUILD)/emu,$(EMU_OPT),convnet))
$(eval $(call EMU_VARIANT,$(BUILD)/asan,$(ASAN_OPT),$(BUILD)/asan/convnet,-O0))
$(eval $(call EMU_VARIANT,$(BUILD)/tsan,$(TSAN_OPT),$(BUILD)/tsan/convnet,-O0,$(TSAN_RT_OPT)))

emu: convnet/_emu$(EMU_EXT) convnet/_emu_test$(EMU_EXT)
emu-asan: $(BUILD)/asan/convnet/_emu$(EMU_EXT) $(BUILD)/asan/convnet/_emu_test$(EMU_EXT)
emu-tsan: $(BUILD)/tsan/convnet/_emu$(EMU_EXT) $(BUILD)/tsan/convnet/_emu_test$(EMU_EXT)
