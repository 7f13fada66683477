// emu_runtime.h -- the interface between the generated kernel registry, the
// emulation runtime (emu_runtime.cpp) and the Python module (emu_module.cpp).
#pragma once
#include <cstddef>
#include <string>

#define CN_EMU_RUNTIME 1
#include "cuda_emu.h"

// One entry per `extern "C" __global__` kernel, written by bindings/gen_registry.py.
// thunk(args) calls the kernel with args[i] pointing at the value of parameter i
// (as cuLaunchKernel's kernelParams).
struct cn_emu_kernel_entry {
    const char* name;
    void (*thunk)(void** args);
    int nparams;
    const char* const* params;   // "const float*", "int", "unsigned long long", ...
    const char* file;            // the source it came from
};
extern const cn_emu_kernel_entry cn_emu_registry[];
extern const int cn_emu_registry_size;

namespace cn_emu {

// Runs kernel k over the grid; throws std::invalid_argument for a bad
// configuration and std::runtime_error for a failure inside the kernel
// (deadlock, assert, ...). Blocks until the grid is done.
void launch(const cn_emu_kernel_entry& k, dim3 grid, dim3 block, size_t shared_mem, void** args);

int threads();              // OS threads a launch may use
void set_threads(int n);    // n >= 1
const char* order();        // "shuffle", "forward" or "reverse"
void set_order(const std::string& order);
size_t stack_bytes();       // per fiber
const char* context_switch();   // "x86-64 asm" or "ucontext"

}  // namespace cn_emu
