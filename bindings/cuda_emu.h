// cuda_emu.h -- the CUDA execution model on the CPU, for kernels/*.cu.
//
// Force-included (g++ -x c++ -std=c++17 -include bindings/cuda_emu.h) when a
// kernel source is compiled for the CPU emulation; CN_EMULATION is defined.
//
// What is emulated
//   - the CUDA keywords (__global__, __device__, __shared__, __launch_bounds__,
//     __align__, __forceinline__, ...), dim3/uint3 and the vector types,
//     threadIdx/blockIdx/blockDim/gridDim, warpSize;
//   - __syncthreads (+ _count/_and/_or), __syncwarp, the warp shuffles
//     (__shfl_sync, _up, _down, _xor, with width) and votes (__ballot_sync,
//     __any_sync, __all_sync, __activemask);
//   - atomics (real atomics: blocks run on several OS threads), fences;
//   - the math and bit intrinsics the kernels use, printf, assert.
//
// How
//   - Every CUDA thread of a block is a fiber (a user-level context with its
//     own mmap'ed stack, guard page below it) on one OS thread; the hand-written
//     x86-64 context switch saves the callee-saved registers, MXCSR and the x87
//     control word (ucontext elsewhere). Blocks of a grid run one at a time per
//     OS thread, on up to CONVNET_EMU_THREADS OS threads (default: the cores).
//   - A deterministic scheduler per block runs each runnable fiber until it
//     blocks (barrier, warp operation) or exits, in an order chosen per barrier
//     phase (CONVNET_EMU_ORDER: "shuffle" (default; a fixed pseudo-random
//     permutation of (block, phase)), "forward" or "reverse"). A missing
//     barrier therefore shows: a thread runs on and reads shared memory its
//     neighbours have not written yet.
//   - __syncthreads releases the block when every thread waits at the same call
//     site. Threads that exited while others wait, or waits at different call
//     sites, are a deadlock: the launch fails with a RuntimeError naming the
//     kernel, the block and the call sites; the interpreter carries on.
//   - Warp operations wait for every lane of the mask (lane = linear thread id
//     % 32, linear id = x + y*Dx + z*Dx*Dy); a lane of the mask that exited or
//     waits elsewhere is reported the same way.
//   - __shared__ is `thread_local`: a block-scope thread_local is static, and
//     one block runs at a time per OS thread, so each running block has its
//     own. Dynamic shared memory is the one array cn_smem (per OS thread).
//     Before every block, static and dynamic shared memory are filled with
//     0xFF bytes (NaN as float; CONVNET_EMU_POISON=0 turns this off), so a
//     read of shared memory nobody wrote shows.
//   - Errors inside a kernel (assert, a bad shuffle width, a lane not in its
//     own mask) stop the launch with a RuntimeError naming block and thread.
//
// Settings (environment, read at load; threads and order also from Python:
// convnet._emu.set_threads / set_order)
//   CONVNET_EMU_THREADS   OS threads per launch (default: the cores)
//   CONVNET_EMU_ORDER     shuffle | forward | reverse
//   CONVNET_EMU_STACK_KB  fiber stack size (default 256, 1024 under ASan)
//   CONVNET_EMU_POISON    0: do not fill shared memory with 0xFF before a block
//
// Build (bindings/emu.mk): each kernels/*.cu -> build/emu/kernels/NAME.o;
// bindings/gen_registry.py -> the launch registry; with emu_runtime.cpp and
// emu_module.cpp -> convnet/_emu*.so. tests/emu_kernels/*.cu -> convnet/_emu_test*.so.
// `make emu-asan` builds both with AddressSanitizer into build/asan/convnet/,
// `make emu-tsan` with ThreadSanitizer into build/tsan/convnet/ (races between
// the threads of a block, with the .cu lines; see emu_runtime.cpp).
//
// Limits
//   - Memory model: plain sequential consistency within a block (fibers do
//     not preempt each other); between blocks only the atomics and fences
//     order anything. Reading an inactive lane in a shuffle returns the
//     caller's own value.
//   - No preemption: a thread that spin-waits on a plain (non-atomic) flag set
//     by another thread of its block hangs; a failed atomicCAS yields, so
//     atomicCAS spin locks work. Grid-wide spin barriers hang when blocks
//     outnumber the OS threads.
//   - __activemask() returns the lanes of the warp that have not exited.
//   - No cooperative groups, textures, surfaces, constant-cache semantics,
//     dynamic parallelism, half precision, clusters, or warp-matrix ops.
//   - Lanes of a warp do not run in lockstep: warp-synchronous code that
//     relies on it without __syncwarp or a shuffle is wrong here (as since Volta).
//   - __device__ is `inline` (helpers in a .cuh may land in several objects),
//     __constant__ too: `__device__ __constant__` together does not compile.
//   - An out-of-bounds access crashes as on the host: use `make emu-asan`.
//     A fiber that overflows its stack hits the guard page (SIGSEGV).
//   - A launch holds its OS threads until it ends: Ctrl-C is seen after it.
#pragma once
#ifndef CN_EMULATION
#define CN_EMULATION 1
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// ---- keywords -------------------------------------------------------------
#define __global__
#define __device__ inline
#define __host__
#define __constant__ inline
#define __managed__
#define __shared__ thread_local
#define __forceinline__ __attribute__((always_inline))
#ifndef CN_EMU_RUNTIME   // libstdc++ spells __attribute__((__noinline__)) itself
#define __noinline__ __attribute__((noinline))
#endif
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// __restrict__ is a g++ keyword already.

// ---- vector types ---------------------------------------------------------
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct int3 { int x, y, z; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(4))) uchar4 { unsigned char x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int3 make_int3(int x, int y, int z) { return int3{x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4{x, y, z, w}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return uchar4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

// ---- thread coordinates (set by the runtime for the running fiber) --------
struct cn_emu_coords {
    const uint3* thread;   // the running fiber's threadIdx
    uint3 block;
    dim3 block_dim;
    dim3 grid_dim;
};
extern thread_local cn_emu_coords cn_emu_here __attribute__((visibility("hidden")));
#define threadIdx (*static_cast<const uint3*>(cn_emu_here.thread))
#define blockIdx (static_cast<const uint3&>(cn_emu_here.block))
#define blockDim (static_cast<const dim3&>(cn_emu_here.block_dim))
#define gridDim (static_cast<const dim3&>(cn_emu_here.grid_dim))
constexpr int warpSize = 32;

// Dynamic shared memory, defined once in the runtime (CN_EMU_MAX_DYNAMIC_SMEM
// bytes per OS thread; kernels declare it with `extern __shared__`).
#define CN_EMU_MAX_DYNAMIC_SMEM (227 * 1024)

// ---- barriers, warps: implemented in bindings/emu_runtime.cpp --------------
enum { CN_EMU_BAR_SYNC = 0, CN_EMU_BAR_COUNT, CN_EMU_BAR_AND, CN_EMU_BAR_OR };
enum {
    CN_EMU_WARP_SYNC = 0, CN_EMU_SHFL_IDX, CN_EMU_SHFL_UP, CN_EMU_SHFL_DOWN, CN_EMU_SHFL_XOR,
    CN_EMU_VOTE_BALLOT, CN_EMU_VOTE_ANY, CN_EMU_VOTE_ALL
};
int cn_emu_barrier(int kind, int pred, const char* file, int line);
unsigned long long cn_emu_warp(int kind, unsigned mask, unsigned long long value, int arg, int width,
                               const char* file, int line);
unsigned cn_emu_activemask();
void cn_emu_yield();
[[noreturn]] void cn_emu_trap(const char* what, const char* file, int line);

#define __syncthreads() cn_emu_barrier(CN_EMU_BAR_SYNC, 0, __FILE__, __LINE__)
#define __syncthreads_count(p) cn_emu_barrier(CN_EMU_BAR_COUNT, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_and(p) cn_emu_barrier(CN_EMU_BAR_AND, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_or(p) cn_emu_barrier(CN_EMU_BAR_OR, (p) ? 1 : 0, __FILE__, __LINE__)
// __syncwarp() and __syncwarp(mask): a call site object, then the call.
struct cn_emu_syncwarp_at {
    const char* file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const {
        cn_emu_warp(CN_EMU_WARP_SYNC, mask, 0, 0, 32, file, line);
    }
};
#define __syncwarp(...) (cn_emu_syncwarp_at{__FILE__, __LINE__}(__VA_ARGS__))

template <class T>
inline T cn_emu_shfl_any(int kind, const char* file, int line, unsigned mask, T var, int arg, int width) {
    static_assert(sizeof(T) <= 8, "__shfl_*_sync: values of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = cn_emu_warp(kind, mask, bits, arg, width, file, line);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
template <class T>
inline T cn_emu_shfl_idx(const char* f, int l, unsigned mask, T var, int src, int width = 32) {
    return cn_emu_shfl_any(CN_EMU_SHFL_IDX, f, l, mask, var, src, width);
}
template <class T>
inline T cn_emu_shfl_up(const char* f, int l, unsigned mask, T var, unsigned delta, int width = 32) {
    return cn_emu_shfl_any(CN_EMU_SHFL_UP, f, l, mask, var, (int)delta, width);
}
template <class T>
inline T cn_emu_shfl_down(const char* f, int l, unsigned mask, T var, unsigned delta, int width = 32) {
    return cn_emu_shfl_any(CN_EMU_SHFL_DOWN, f, l, mask, var, (int)delta, width);
}
template <class T>
inline T cn_emu_shfl_xor(const char* f, int l, unsigned mask, T var, int lane_mask, int width = 32) {
    return cn_emu_shfl_any(CN_EMU_SHFL_XOR, f, l, mask, var, lane_mask, width);
}
#define __shfl_sync(...) cn_emu_shfl_idx(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) cn_emu_shfl_up(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) cn_emu_shfl_down(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) cn_emu_shfl_xor(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, p) \
    ((unsigned)cn_emu_warp(CN_EMU_VOTE_BALLOT, (mask), (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) ((int)cn_emu_warp(CN_EMU_VOTE_ANY, (mask), (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, p) ((int)cn_emu_warp(CN_EMU_VOTE_ALL, (mask), (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __activemask() cn_emu_activemask()

// ---- assert, printf, misc --------------------------------------------------
#ifndef CN_EMU_RUNTIME   // the runtime and the Python module keep the C library's assert
#undef assert
#define assert(e) ((e) ? (void)0 : cn_emu_trap("assertion `" #e "' failed", __FILE__, __LINE__))
#endif
#define __trap() cn_emu_trap("__trap()", __FILE__, __LINE__)
#define __nanosleep(ns) cn_emu_yield()
inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
// printf is the C library's (<cstdio>).

// ---- fences and atomics (valid across OS threads) ----------------------------
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// The memory order of the atomics: sequentially consistent, except under
// ThreadSanitizer (`make emu-tsan`), where they are relaxed as CUDA's are, so
// that an atomic orders nothing that CUDA would not order.
#if defined(__SANITIZE_THREAD__)
#define CN_EMU_MO __ATOMIC_RELAXED
#else
#define CN_EMU_MO __ATOMIC_SEQ_CST
#endif
#define CN_EMU_ATOMIC_INT(T)                                                                    \
    inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, CN_EMU_MO); }         \
    inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, CN_EMU_MO); }         \
    inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, CN_EMU_MO); }       \
    inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, CN_EMU_MO); }         \
    inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, CN_EMU_MO); }           \
    inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, CN_EMU_MO); }         \
    inline T atomicMax(T* a, T v) {                                                             \
        T old = __atomic_load_n(a, CN_EMU_MO);                                           \
        while (old < v && !__atomic_compare_exchange_n(a, &old, v, false, CN_EMU_MO,     \
                                                       CN_EMU_MO)) {}                    \
        return old;                                                                             \
    }                                                                                           \
    inline T atomicMin(T* a, T v) {                                                             \
        T old = __atomic_load_n(a, CN_EMU_MO);                                           \
        while (old > v && !__atomic_compare_exchange_n(a, &old, v, false, CN_EMU_MO,     \
                                                       CN_EMU_MO)) {}                    \
        return old;                                                                             \
    }                                                                                           \
    inline T atomicCAS(T* a, T compare, T v) {                                                  \
        T old = compare;                                                                        \
        if (!__atomic_compare_exchange_n(a, &old, v, false, CN_EMU_MO, CN_EMU_MO)) \
            cn_emu_yield(); /* let the lock holder of this block run */                          \
        return old;                                                                             \
    }
CN_EMU_ATOMIC_INT(int)
CN_EMU_ATOMIC_INT(unsigned int)
CN_EMU_ATOMIC_INT(unsigned long long)
CN_EMU_ATOMIC_INT(long long)
#undef CN_EMU_ATOMIC_INT

template <class T>
inline T cn_emu_atomic_fadd(T* a, T v) {
    T old, next;
    __atomic_load(a, &old, CN_EMU_MO);
    do {
        next = old + v;
    } while (!__atomic_compare_exchange(a, &old, &next, false, CN_EMU_MO, CN_EMU_MO));
    return old;
}
inline float atomicAdd(float* a, float v) { return cn_emu_atomic_fadd(a, v); }
inline double atomicAdd(double* a, double v) { return cn_emu_atomic_fadd(a, v); }
inline float atomicExch(float* a, float v) {
    float old;
    __atomic_exchange(a, &v, &old, CN_EMU_MO);
    return old;
}
inline unsigned int atomicInc(unsigned int* a, unsigned int limit) {
    unsigned int old = __atomic_load_n(a, CN_EMU_MO), next;
    do {
        next = old >= limit ? 0u : old + 1u;
    } while (!__atomic_compare_exchange_n(a, &old, next, false, CN_EMU_MO, CN_EMU_MO));
    return old;
}
inline unsigned int atomicDec(unsigned int* a, unsigned int limit) {
    unsigned int old = __atomic_load_n(a, CN_EMU_MO), next;
    do {
        next = (old == 0u || old > limit) ? limit : old - 1u;
    } while (!__atomic_compare_exchange_n(a, &old, next, false, CN_EMU_MO, CN_EMU_MO));
    return old;
}

// ---- math ------------------------------------------------------------------
using std::abs;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_ru(float x) { return (int)std::ceil(x); }
inline unsigned int __float2uint_rn(float x) { return (unsigned int)std::nearbyint(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned int x) { return (float)x; }
inline unsigned int __float_as_uint(float x) { return __builtin_bit_cast(unsigned int, x); }
inline float __uint_as_float(unsigned int x) { return __builtin_bit_cast(float, x); }
inline int __float_as_int(float x) { return __builtin_bit_cast(int, x); }
inline float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
inline long long __double_as_longlong(double x) { return __builtin_bit_cast(long long, x); }
inline double __longlong_as_double(long long x) { return __builtin_bit_cast(double, x); }

// ---- integer intrinsics -------------------------------------------------------
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return ((int)((unsigned)a << 8) >> 8) * ((int)((unsigned)b << 8) >> 8); }
inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }

// min/max overloads as in CUDA's math headers (mixed signedness -> unsigned).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline unsigned int min(int a, unsigned int b) { return min((unsigned int)a, b); }
inline unsigned int max(int a, unsigned int b) { return max((unsigned int)a, b); }
inline unsigned int min(unsigned int a, int b) { return min(a, (unsigned int)b); }
inline unsigned int max(unsigned int a, int b) { return max(a, (unsigned int)b); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline float min(float a, int b) { return std::fmin(a, (float)b); }
inline float max(float a, int b) { return std::fmax(a, (float)b); }
inline float min(int a, float b) { return std::fmin((float)a, b); }
inline float max(int a, float b) { return std::fmax((float)a, b); }
