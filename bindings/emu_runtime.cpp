// emu_runtime.cpp -- fibers, the per-block scheduler, barriers, warp operations
// and the OS-thread pool behind convnet._emu.launch. See cuda_emu.h for the
// model and its limits.
//
// Per OS thread (a Worker): a set of fibers (one per CUDA thread of the block
// being run), the scheduler's saved context, the run queue. A block runs as:
//   init every fiber at the kernel's entry -> run queue in the phase's order ->
//   run each fiber until it blocks or exits -> when the queue is empty, either
//   all exited (done), or all wait at one barrier (release, next phase), or it
//   is a deadlock (error naming the call sites).
// Errors are found in the scheduler, never thrown inside a fiber: a failing
// block's fibers are abandoned (their stacks are reset at the next block).
#include "emu_runtime.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CN_EMU_ASAN 1
#else
#define CN_EMU_ASAN 0
#endif

// ThreadSanitizer build (`make emu-tsan`): the kernels are instrumented, this
// runtime is not (its own bookkeeping is invisible to TSan) but tells TSan
// about the fibers and about what orders the threads of a block:
//   - each CUDA thread is a TSan fiber; switches do not synchronize
//     (__tsan_switch_to_fiber_no_sync), so accesses of two threads of a block are
//     ordered only by what follows;
//   - __syncthreads: every thread releases its own cell when it arrives; the
//     scheduler, releasing the barrier, acquires every cell and releases each
//     thread's inbox, which the thread acquires when it resumes;
//   - warp operations: the same among the lanes of the mask, done by the last
//     lane to arrive;
//   - block start/end: the scheduler releases a start cell every fiber acquires
//     when it starts, and acquires the end cell every fiber releases when it
//     exits (so blocks after one another on an OS thread, and launches, are
//     ordered; blocks running at once on two OS threads are not);
//   - atomics: relaxed atomic operations under TSan (cuda_emu.h), as CUDA's
//     atomics are: never reported, and ordering nothing.
#if defined(CN_EMU_TSAN) && CN_EMU_TSAN
#include <sanitizer/tsan_interface.h>
// in libtsan, not in its header
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#undef CN_EMU_TSAN
#define CN_EMU_TSAN 1
#else
#undef CN_EMU_TSAN
#define CN_EMU_TSAN 0
#endif

#if defined(__x86_64__) && !defined(CN_EMU_UCONTEXT)
#define CN_EMU_ASM_SWITCH 1
#else
#define CN_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

// Dynamic shared memory and the running fiber's coordinates (cuda_emu.h).
alignas(16) thread_local unsigned char cn_smem[CN_EMU_MAX_DYNAMIC_SMEM];
thread_local cn_emu_coords cn_emu_here;
// Around the kernels' static __shared__ variables (bindings/emu_shared_mark.cpp).
extern thread_local unsigned char cn_emu_shared_begin[1] __attribute__((visibility("hidden")));
extern thread_local unsigned char cn_emu_shared_end[1] __attribute__((visibility("hidden")));

#if CN_EMU_ASM_SWITCH
// cn_emu_ctx_switch(save, next): push the callee-saved registers and the
// MXCSR / x87 control words on the current stack, store the stack pointer in
// *save, load `next` and pop the same from there. A new fiber's stack is laid
// out as if it had called cn_emu_ctx_switch from cn_emu_ctx_start, which calls
// r13(r12) = fiber_main(fiber).
extern "C" void cn_emu_ctx_switch(void** save, void* next);
extern "C" void cn_emu_ctx_start();
asm(R"(
    .text
    .globl cn_emu_ctx_switch
    .hidden cn_emu_ctx_switch
    .type cn_emu_ctx_switch, @function
cn_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cn_emu_ctx_switch, .-cn_emu_ctx_switch

    .globl cn_emu_ctx_start
    .hidden cn_emu_ctx_start
    .type cn_emu_ctx_start, @function
cn_emu_ctx_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size cn_emu_ctx_start, .-cn_emu_ctx_start
)");
#endif

namespace cn_emu {
namespace {

enum class St : unsigned char { Runnable, Barrier, Warp, Done, Error };

struct Fiber {
#if CN_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    char* map = nullptr;          // the mapping: guard page, then the stack
    char* stack_lo = nullptr;
    size_t stack_size = 0;
    void* asan_fake = nullptr;
    void* tsan = nullptr;         // its TSan fiber (CN_EMU_TSAN)
    char tsan_cell = 0;           // released by this thread when it waits
    char tsan_inbox = 0;          // released to it when it may go on
    int tsan_ignores = 0;         // open TsanIgnore scopes (a fiber abandoned in one gets a new TSan fiber)
    uint3 tid{0, 0, 0};
    unsigned linear = 0;
    St st = St::Runnable;
    // where it waits
    int kind = 0;
    const char* file = nullptr;
    int line = 0;
    // barrier predicate / result, warp operation operands / result
    int pred = 0;
    int bar_result = 0;
    unsigned mask = 0;
    int arg = 0;
    int width = 32;
    unsigned long long value = 0;
    unsigned long long result = 0;
};

// A warp operation waiting for the lanes of its mask.
struct WarpGroup {
    unsigned mask;      // lanes expected (the mask, restricted to lanes that exist)
    unsigned arrived;
    int kind;
    const char* file;
    int line;
};

struct LaunchState {
    const cn_emu_kernel_entry* k;
    dim3 grid, block;
    size_t shared_mem;
    void** args;
    unsigned long long nblocks;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex err_mutex;
    std::string err;
};

// ---- settings -----------------------------------------------------------------
// Settings are read while the extension loads: a bad value is a warning and
// the default, never an exception (that would abort the interpreter).
int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (*end || n <= 0 || n > 1 << 20) {
        fprintf(stderr, "convnet emulation: ignoring %s=%s (not a positive integer); using %d\n", name, v, fallback);
        return fallback;
    }
    return (int)n;
}

int default_threads() {
    unsigned hc = std::thread::hardware_concurrency();
    return env_int("CONVNET_EMU_THREADS", hc ? (int)hc : 1);
}

enum class Order { Shuffle, Forward, Reverse };
Order parse_order(const std::string& s) {
    if (s == "shuffle") return Order::Shuffle;
    if (s == "forward") return Order::Forward;
    if (s == "reverse") return Order::Reverse;
    throw std::invalid_argument("emulation order must be 'shuffle', 'forward' or 'reverse', got '" + s + "'");
}
Order default_order() {
    const char* v = std::getenv("CONVNET_EMU_ORDER");
    if (!v || !*v) return Order::Shuffle;
    try {
        return parse_order(v);
    } catch (const std::exception& e) {
        fprintf(stderr, "convnet emulation: ignoring CONVNET_EMU_ORDER: %s; using shuffle\n", e.what());
        return Order::Shuffle;
    }
}

std::atomic<int> g_threads{default_threads()};
std::atomic<int> g_order{(int)default_order()};
const size_t g_stack_bytes = (size_t)std::max(16, env_int("CONVNET_EMU_STACK_KB", CN_EMU_ASAN ? 1024 : 256)) * 1024;
const size_t g_page = (size_t)sysconf(_SC_PAGESIZE);

std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// ---- the worker: one per OS thread ---------------------------------------------
struct Worker {
#if CN_EMU_ASM_SWITCH
    void* sched_sp = nullptr;
#else
    ucontext_t sched_ctx;
#endif
    void* sched_fake = nullptr;
    void* sched_tsan = nullptr;   // the OS thread's own TSan context
    char tsan_start = 0, tsan_end = 0;
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;

    std::vector<Fiber*> fibers;   // stable addresses
    unsigned n = 0;               // threads in the running block
    Fiber* cur = nullptr;
    std::vector<int> queue;
    size_t head = 0;
    unsigned phase = 0;
    unsigned long long block_linear = 0;
    std::vector<std::vector<WarpGroup>> warps;
    LaunchState* launch = nullptr;
    std::string error;            // set by a fiber that traps

    ~Worker() {
        for (Fiber* f : fibers) {
#if CN_EMU_TSAN
            if (f->tsan) __tsan_destroy_fiber(f->tsan);
#endif
            munmap(f->map, f->stack_size + g_page);
            delete f;
        }
    }
};

thread_local Worker* tls_worker = nullptr;

Worker& worker() {
    static thread_local Worker w;
    tls_worker = &w;
    return w;
}

const bool g_poison = env_int("CONVNET_EMU_POISON", 1) != 0;

// This OS thread's static shared memory: the kernels' thread_local variables
// between the two marks. Empty (no poisoning) if the layout is not the one
// expected, i.e. if any of the runtime's own thread_locals lies inside.
void static_shared(unsigned char*& lo, size_t& n) {
    uintptr_t a = (uintptr_t)cn_emu_shared_begin + 1, b = (uintptr_t)cn_emu_shared_end;
    asm volatile("" : "+r"(a), "+r"(b));   // addresses, not objects, from here on
    lo = (unsigned char*)a;
    unsigned char* hi = (unsigned char*)b;
    n = hi > lo ? (size_t)(hi - lo) : 0;
    const void* ours[] = {cn_smem, &cn_emu_here, &tls_worker, tls_worker};
    for (const void* p : ours)
        if ((const unsigned char*)p >= lo && (const unsigned char*)p < hi) n = 0;
}

[[noreturn]] void fiber_main(Fiber* f);

// The runtime's own work inside a fiber (queues, messages: intercepted malloc and
// memmove) is not the kernel's: TSan ignores the accesses in this scope.
#if CN_EMU_TSAN
struct TsanIgnore {
    Fiber* f;
    explicit TsanIgnore(Fiber* fiber) : f(fiber) { __tsan_ignore_thread_begin(); f->tsan_ignores++; }
    ~TsanIgnore() { f->tsan_ignores--; __tsan_ignore_thread_end(); }
};
#define CN_EMU_TSAN_IGNORE(fiber) TsanIgnore tsan_ignore_scope(fiber)
#else
#define CN_EMU_TSAN_IGNORE(fiber) (void)0
#endif

#if !CN_EMU_ASM_SWITCH
void fiber_main_uc(unsigned hi, unsigned lo) {
    fiber_main((Fiber*)(((uintptr_t)hi << 32) | lo));
}
#endif

void ensure_fibers(Worker& w, unsigned n) {
    while (w.fibers.size() < n) {
        size_t bytes = g_stack_bytes + g_page;
        void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) throw std::runtime_error("emulation: cannot map a fiber stack");
        if (mprotect(m, g_page, PROT_NONE) != 0) {   // guard page below the stack
            munmap(m, bytes);
            throw std::runtime_error("emulation: cannot protect a fiber stack's guard page");
        }
        Fiber* f = new Fiber();
        f->map = (char*)m;
        f->stack_lo = (char*)m + g_page;
        f->stack_size = g_stack_bytes;
#if CN_EMU_TSAN
        f->tsan = __tsan_create_fiber(0);
        __tsan_set_fiber_name(f->tsan, "emulated CUDA thread");
#endif
        w.fibers.push_back(f);
    }
}

// The floating-point control state a new fiber starts with: the launching
// thread's (MXCSR in the low half, x87 control word in the high half).
uint64_t fp_state() {
#if CN_EMU_ASM_SWITCH
    unsigned mxcsr = __builtin_ia32_stmxcsr();
    unsigned short fcw;
    asm volatile("fnstcw %0" : "=m"(fcw));
    return (uint64_t)mxcsr | ((uint64_t)fcw << 32);
#else
    return 0;
#endif
}

// Set fiber f up to start at fiber_main on a fresh stack.
void reset_fiber(Fiber* f, uint64_t fp) {
#if CN_EMU_ASAN
    __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
    f->asan_fake = nullptr;
#if CN_EMU_ASM_SWITCH
    uintptr_t top = ((uintptr_t)(f->stack_lo + f->stack_size)) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)(top - 80);   // 16-byte aligned; see cn_emu_ctx_start
    sp[0] = fp;
    sp[1] = 0;                               // r15
    sp[2] = 0;                               // r14
    sp[3] = (uint64_t)(uintptr_t)&fiber_main;   // r13
    sp[4] = (uint64_t)(uintptr_t)f;          // r12
    sp[5] = 0;                               // rbx
    sp[6] = 0;                               // rbp
    sp[7] = (uint64_t)(uintptr_t)&cn_emu_ctx_start;   // return address
    f->sp = sp;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack_lo;
    f->ctx.uc_stack.ss_size = f->stack_size;
    f->ctx.uc_link = nullptr;
    (void)fp;
    uintptr_t p = (uintptr_t)f;
    makecontext(&f->ctx, (void (*)())fiber_main_uc, 2, (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
#endif
}

// scheduler -> fiber f; returns when f blocks, exits or traps.
void run_fiber(Worker& w, Fiber* f) {
    w.cur = f;
    cn_emu_here.thread = &f->tid;
#if CN_EMU_ASAN
    __sanitizer_start_switch_fiber(&w.sched_fake, f->stack_lo, f->stack_size);
#endif
#if CN_EMU_TSAN
    __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if CN_EMU_ASM_SWITCH
    cn_emu_ctx_switch(&w.sched_sp, f->sp);
#else
    swapcontext(&w.sched_ctx, &f->ctx);
#endif
#if CN_EMU_ASAN
    __sanitizer_finish_switch_fiber(w.sched_fake, nullptr, nullptr);
#endif
    w.cur = nullptr;
}

// fiber -> scheduler. `dying`: the fiber will never be resumed.
void to_scheduler(Worker& w, Fiber* f, bool dying) {
#if CN_EMU_ASAN
    __sanitizer_start_switch_fiber(dying ? nullptr : &f->asan_fake, w.sched_bottom, w.sched_size);
#else
    (void)dying;
#endif
#if CN_EMU_TSAN
    __tsan_switch_to_fiber(w.sched_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if CN_EMU_ASM_SWITCH
    cn_emu_ctx_switch(&f->sp, w.sched_sp);
#else
    swapcontext(&f->ctx, &w.sched_ctx);
#endif
#if CN_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, nullptr, nullptr);
#endif
}

[[noreturn]] void fiber_main(Fiber* f) {
    Worker& w = *tls_worker;
#if CN_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w.sched_bottom, &w.sched_size);
#endif
#if CN_EMU_TSAN
    __tsan_acquire(&w.tsan_start);
#endif
    w.launch->k->thunk(w.launch->args);
#if CN_EMU_TSAN
    __tsan_release(&w.tsan_end);
#endif
    f->st = St::Done;
    to_scheduler(w, f, true);
    __builtin_trap();   // never resumed
}

std::string coords(uint3 v) { return fmt("(%u,%u,%u)", v.x, v.y, v.z); }
std::string site(const char* file, int line) { return fmt("%s:%d", file ? file : "?", line); }

const char* warp_op_name(int kind) {
    switch (kind) {
        case CN_EMU_WARP_SYNC: return "__syncwarp";
        case CN_EMU_SHFL_IDX: return "__shfl_sync";
        case CN_EMU_SHFL_UP: return "__shfl_up_sync";
        case CN_EMU_SHFL_DOWN: return "__shfl_down_sync";
        case CN_EMU_SHFL_XOR: return "__shfl_xor_sync";
        case CN_EMU_VOTE_BALLOT: return "__ballot_sync";
        case CN_EMU_VOTE_ANY: return "__any_sync";
        case CN_EMU_VOTE_ALL: return "__all_sync";
    }
    return "warp operation";
}
const char* barrier_name(int kind) {
    switch (kind) {
        case CN_EMU_BAR_COUNT: return "__syncthreads_count";
        case CN_EMU_BAR_AND: return "__syncthreads_and";
        case CN_EMU_BAR_OR: return "__syncthreads_or";
    }
    return "__syncthreads";
}

std::string where(Worker& w) {
    return fmt("kernel %s block %s", w.launch->k->name, coords(cn_emu_here.block).c_str());
}

// A fiber stops the block with an error: record it, never come back.
[[noreturn]] void fiber_fail(Worker& w, const std::string& msg) {
    Fiber* f = w.cur;
    if (w.error.empty()) w.error = msg;
    f->st = St::Error;
#if CN_EMU_TSAN
    while (f->tsan_ignores > 0) {   // the caller's scope never closes
        f->tsan_ignores--;
        __tsan_ignore_thread_end();
    }
#endif
    to_scheduler(w, f, true);
    __builtin_trap();
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Queue every thread of the block for a new phase, in the phase's order.
void queue_all(Worker& w) {
    w.queue.resize(w.n);
    w.head = 0;
    Order o = (Order)g_order.load();
    for (unsigned i = 0; i < w.n; i++) w.queue[i] = (int)(o == Order::Reverse ? w.n - 1 - i : i);
    if (o == Order::Shuffle) {
        uint64_t s = w.block_linear * 0x100000001b3ull + w.phase;
        for (unsigned i = w.n; i > 1; i--) std::swap(w.queue[i - 1], w.queue[splitmix(s) % i]);
    }
    w.phase++;
}

std::string lanes_text(unsigned m) {
    std::string s;
    for (int i = 0; i < 32;) {
        if (!(m >> i & 1)) { i++; continue; }
        int j = i;
        while (j + 1 < 32 && (m >> (j + 1) & 1)) j++;
        if (!s.empty()) s += ",";
        s += j > i ? fmt("%d-%d", i, j) : fmt("%d", i);
        i = j + 1;
    }
    return s;
}

// The queue is empty and not every thread exited: release a barrier or explain
// the deadlock. Returns an empty string when the block may go on.
std::string settle(Worker& w) {
    unsigned done = 0, at_bar = 0, at_warp = 0;
    for (unsigned i = 0; i < w.n; i++) {
        St s = w.fibers[i]->st;
        done += s == St::Done;
        at_bar += s == St::Barrier;
        at_warp += s == St::Warp;
    }
    if (at_warp) {
        for (size_t wi = 0; wi < w.warps.size(); wi++) {
            for (const WarpGroup& g : w.warps[wi]) {
                std::string msg = fmt("deadlock in %s: warp %zu: lanes %s wait at %s in %s(mask 0x%08x); ",
                                      where(w).c_str(), wi, lanes_text(g.arrived).c_str(),
                                      site(g.file, g.line).c_str(), warp_op_name(g.kind), g.mask);
                // the missing lanes, grouped by what they do instead
                unsigned missing = g.mask & ~g.arrived;
                std::vector<std::pair<std::string, unsigned>> groups;
                for (int l = 0; l < 32; l++) {
                    if (!(missing >> l & 1)) continue;
                    Fiber* f = w.fibers[wi * 32 + l];
                    std::string what;
                    if (f->st == St::Done) what = "exited";
                    else if (f->st == St::Barrier) what = "wait at " + std::string(barrier_name(f->kind)) + " " + site(f->file, f->line);
                    else what = "wait at " + std::string(warp_op_name(f->kind)) + " " + site(f->file, f->line) + fmt(" (mask 0x%08x)", f->mask);
                    auto it = std::find_if(groups.begin(), groups.end(), [&](auto& p) { return p.first == what; });
                    if (it == groups.end()) groups.push_back({what, 1u << l});
                    else it->second |= 1u << l;
                }
                std::string parts;
                for (auto& p : groups) {
                    if (!parts.empty()) parts += "; ";
                    parts += (__builtin_popcount(p.second) > 1 ? "lanes " : "lane ") + lanes_text(p.second) + " " + p.first;
                }
                return msg + parts;
            }
        }
        return fmt("deadlock in %s: threads wait at warp operations", where(w).c_str());
    }
    // Only barriers and exits are left. The common case first: every thread
    // waits at one call site (no strings, no allocation).
    bool one_site = done == 0;
    const Fiber* f0 = w.fibers[0];
    for (unsigned i = 1; i < w.n && one_site; i++) {
        const Fiber* f = w.fibers[i];
        one_site = f->line == f0->line && f->kind == f0->kind &&
                   (f->file == f0->file || std::strcmp(f->file, f0->file) == 0);
    }
    std::map<std::pair<std::string, int>, unsigned> sites;
    if (!one_site) {
        for (unsigned i = 0; i < w.n; i++) {
            Fiber* f = w.fibers[i];
            if (f->st == St::Barrier) sites[{site(f->file, f->line), f->kind}]++;
        }
    }
    if (one_site) {   // release
        int count = 0;
        for (unsigned i = 0; i < w.n; i++) count += w.fibers[i]->pred;
        int kind = f0->kind;
        int result = kind == CN_EMU_BAR_COUNT ? count
                   : kind == CN_EMU_BAR_AND   ? (count == (int)w.n)
                   : kind == CN_EMU_BAR_OR    ? (count > 0)
                                              : 0;
#if CN_EMU_TSAN
        for (unsigned i = 0; i < w.n; i++) __tsan_acquire(&w.fibers[i]->tsan_cell);
        for (unsigned i = 0; i < w.n; i++) __tsan_release(&w.fibers[i]->tsan_inbox);
#endif
        for (unsigned i = 0; i < w.n; i++) {
            w.fibers[i]->bar_result = result;
            w.fibers[i]->st = St::Runnable;
        }
        queue_all(w);
        return "";
    }
    std::string msg = fmt("deadlock in %s: ", where(w).c_str());
    bool first = true;
    for (auto& s : sites) {
        msg += fmt("%s%u of %u threads wait at %s%s", first ? "" : ", ", s.second, w.n, s.first.first.c_str(),
                   s.first.second == CN_EMU_BAR_SYNC ? "" : (std::string(" (") + barrier_name(s.first.second) + ")").c_str());
        first = false;
    }
    if (done) msg += fmt(", %u exited", done);
    if (sites.size() > 1) msg += " (__syncthreads at different call sites)";
    return msg;
}

// Runs one block on this OS thread. Returns an error message or "".
std::string run_block(Worker& w, LaunchState& L, unsigned long long b) {
    const dim3 B = L.block, G = L.grid;
    w.block_linear = b;
    cn_emu_here.block = uint3{(unsigned)(b % G.x), (unsigned)(b / G.x % G.y), (unsigned)(b / ((unsigned long long)G.x * G.y))};
    cn_emu_here.block_dim = B;
    cn_emu_here.grid_dim = G;
    w.n = B.x * B.y * B.z;
    w.launch = &L;
    w.error.clear();
    w.phase = 0;
    ensure_fibers(w, w.n);
    const uint64_t fp = fp_state();
    for (unsigned i = 0; i < w.n; i++) {
        Fiber* f = w.fibers[i];
        f->linear = i;
        f->tid = uint3{i % B.x, i / B.x % B.y, i / (B.x * B.y)};
#if CN_EMU_TSAN
        if (f->tsan_ignores) {      // abandoned inside the runtime by a failed block
            __tsan_destroy_fiber(f->tsan);
            f->tsan = __tsan_create_fiber(0);
            __tsan_set_fiber_name(f->tsan, "emulated CUDA thread");
            f->tsan_ignores = 0;
        }
#endif
        f->st = St::Runnable;
        f->pred = 0;
        reset_fiber(f, fp);
    }
    w.warps.resize((w.n + 31) / 32);
    for (auto& groups : w.warps) groups.clear();
    if (g_poison) {   // unwritten shared memory reads as 0xFF bytes (NaN)
        unsigned char* lo;
        size_t bytes;
        static_shared(lo, bytes);
        if (bytes) std::memset(lo, 0xff, bytes);
    }
    if (L.shared_mem) {
#if CN_EMU_ASAN
        __asan_unpoison_memory_region(cn_smem, L.shared_mem);
#endif
        if (g_poison) std::memset(cn_smem, 0xff, L.shared_mem);
    }
#if CN_EMU_ASAN
    // reads past the launch's dynamic shared memory are reported by ASan
    __asan_poison_memory_region(cn_smem + L.shared_mem, sizeof(cn_smem) - L.shared_mem);
#endif
#if CN_EMU_TSAN
    w.sched_tsan = __tsan_get_current_fiber();
    __tsan_release(&w.tsan_start);
#endif
    queue_all(w);
    for (;;) {
        while (w.head < w.queue.size()) {
            Fiber* f = w.fibers[w.queue[w.head++]];
            if (f->st != St::Runnable) continue;
            run_fiber(w, f);
            if (f->st == St::Error) return w.error;
        }
        w.queue.clear();
        w.head = 0;
        bool all_done = true;
        for (unsigned i = 0; i < w.n && all_done; i++) all_done = w.fibers[i]->st == St::Done;
        if (all_done) {
#if CN_EMU_TSAN
            __tsan_acquire(&w.tsan_end);
#endif
            return "";
        }
        std::string err = settle(w);
        if (!err.empty()) return err;
    }
}

void run_blocks(LaunchState& L) {
    Worker& w = worker();
    try {
        for (;;) {
            if (L.failed.load()) return;
            unsigned long long b = L.next.fetch_add(1);
            if (b >= L.nblocks) return;
            std::string err = run_block(w, L, b);
            if (!err.empty()) {
                std::lock_guard<std::mutex> lock(L.err_mutex);
                if (!L.failed.exchange(true)) L.err = err;
                return;
            }
        }
    } catch (const std::exception& e) {   // e.g. no memory for fiber stacks
        std::lock_guard<std::mutex> lock(L.err_mutex);
        if (!L.failed.exchange(true)) L.err = e.what();
    }
    w.launch = nullptr;
}

// ---- the OS-thread pool ------------------------------------------------------------
// Helper threads wait for a generation number to change, run blocks of the
// current launch, and count themselves out. The calling thread works too.
struct Pool {
    std::mutex m;
    std::condition_variable wake, idle;
    std::vector<std::thread> threads;
    LaunchState* job = nullptr;
    unsigned long long gen = 0;
    int wanted = 0;      // helpers that should join this generation
    int joined = 0;
    int running = 0;

    void loop() {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> lock(m);
        for (;;) {
            wake.wait(lock, [&] { return gen != seen && joined < wanted; });
            seen = gen;
            joined++;
            running++;
            LaunchState* L = job;
            lock.unlock();
            run_blocks(*L);
            lock.lock();
            if (--running == 0) idle.notify_all();
        }
    }

    void run(LaunchState& L, int helpers) {
        {
            std::lock_guard<std::mutex> lock(m);
            while ((int)threads.size() < helpers) threads.emplace_back([this] { loop(); });
            job = &L;
            wanted = helpers;
            joined = 0;
            gen++;
        }
        wake.notify_all();
        run_blocks(L);
        std::unique_lock<std::mutex> lock(m);
        // Every helper asked for must have joined and finished: none may still
        // hold a pointer to L after we return.
        idle.wait(lock, [&] { return joined == wanted && running == 0; });
        wanted = 0;
        job = nullptr;
    }
};

Pool* g_pool = nullptr;
std::mutex g_pool_mutex;
std::mutex g_launch_mutex;   // one launch at a time (the pool serves one job)

Pool& pool() {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    if (!g_pool) g_pool = new Pool();   // never destroyed: its threads sleep until exit
    return *g_pool;
}

// fork() waits for a running launch to finish; the child forgets the pool,
// whose threads do not exist there (a new pool starts at its first launch).
struct ForkGuard {
    ForkGuard() {
        pthread_atfork([] { g_launch_mutex.lock(); }, [] { g_launch_mutex.unlock(); },
                       [] {
                           g_launch_mutex.unlock();
                           new (&g_pool_mutex) std::mutex();
                           g_pool = nullptr;
                       });
    }
} g_fork_guard;

}  // namespace

void launch(const cn_emu_kernel_entry& k, dim3 grid, dim3 block, size_t shared_mem, void** args) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0)
        throw std::invalid_argument(fmt("kernel %s: grid dimensions must be > 0, got (%u,%u,%u)", k.name, grid.x, grid.y, grid.z));
    if (block.x == 0 || block.y == 0 || block.z == 0)
        throw std::invalid_argument(fmt("kernel %s: block dimensions must be > 0, got (%u,%u,%u)", k.name, block.x, block.y, block.z));
    if (grid.y > 65535 || grid.z > 65535)
        throw std::invalid_argument(fmt("kernel %s: grid y and z must be <= 65535, got (%u,%u,%u)", k.name, grid.x, grid.y, grid.z));
    if (block.x > 1024 || block.y > 1024 || block.z > 64 || (unsigned long long)block.x * block.y * block.z > 1024)
        throw std::invalid_argument(fmt("kernel %s: block (%u,%u,%u) has more than 1024 threads or a dimension over its limit (1024, 1024, 64)",
                                        k.name, block.x, block.y, block.z));
    if (shared_mem > sizeof(cn_smem))
        throw std::invalid_argument(fmt("kernel %s: %zu bytes of dynamic shared memory asked, the emulation has %zu",
                                        k.name, shared_mem, sizeof(cn_smem)));
    LaunchState L;
    L.k = &k;
    L.grid = grid;
    L.block = block;
    L.shared_mem = shared_mem;
    L.args = args;
    L.nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    int helpers = (int)std::min<unsigned long long>((unsigned long long)g_threads.load() - 1, L.nblocks - 1);
    if (helpers <= 0)
        run_blocks(L);
    else
        pool().run(L, helpers);
    if (L.failed.load()) throw std::runtime_error(L.err);
}

int threads() { return g_threads.load(); }
void set_threads(int n) {
    if (n < 1) throw std::invalid_argument(fmt("emulation threads must be >= 1, got %d", n));
    g_threads.store(n);
}
const char* order() {
    switch ((Order)g_order.load()) {
        case Order::Forward: return "forward";
        case Order::Reverse: return "reverse";
        default: return "shuffle";
    }
}
void set_order(const std::string& o) { g_order.store((int)parse_order(o)); }
size_t stack_bytes() { return g_stack_bytes; }
const char* context_switch() { return CN_EMU_ASM_SWITCH ? "x86-64 asm" : "ucontext"; }

}  // namespace cn_emu

// ---- called from kernel code (cuda_emu.h) -----------------------------------------
using namespace cn_emu;

static Worker& in_fiber(const char* what, const char* file, int line) {
    Worker* w = tls_worker;
    if (!w || !w->cur) {
        fprintf(stderr, "emulation: %s called outside a kernel launch at %s:%d\n", what, file, line);
        abort();
    }
    return *w;
}

int cn_emu_barrier(int kind, int pred, const char* file, int line) {
    Worker& w = in_fiber("__syncthreads", file, line);
    Fiber* f = w.cur;
    CN_EMU_TSAN_IGNORE(f);
    f->st = St::Barrier;
    f->kind = kind;
    f->pred = pred;
    f->file = file;
    f->line = line;
#if CN_EMU_TSAN
    __tsan_release(&f->tsan_cell);
#endif
    to_scheduler(w, f, false);
#if CN_EMU_TSAN
    __tsan_acquire(&f->tsan_inbox);
#endif
    return f->bar_result;
}

static unsigned long long warp_result(const WarpGroup& g, Worker& w, unsigned warp, unsigned lane) {
    Fiber* f = w.fibers[warp * 32 + lane];
    switch (g.kind) {
        case CN_EMU_WARP_SYNC: return 0;
        case CN_EMU_VOTE_BALLOT:
        case CN_EMU_VOTE_ANY:
        case CN_EMU_VOTE_ALL: {
            unsigned ballot = 0;
            for (unsigned l = 0; l < 32; l++)
                if ((g.mask >> l & 1) && w.fibers[warp * 32 + l]->value) ballot |= 1u << l;
            if (g.kind == CN_EMU_VOTE_BALLOT) return ballot;
            if (g.kind == CN_EMU_VOTE_ANY) return ballot != 0;
            return ballot == g.mask;
        }
    }
    int width = f->width;
    int seg = (int)lane & ~(width - 1), last = seg + width - 1;
    int src = (int)lane;
    switch (g.kind) {
        case CN_EMU_SHFL_IDX: src = seg + (f->arg & (width - 1)); break;
        case CN_EMU_SHFL_UP: src = (int)lane - f->arg; if (src < seg) src = (int)lane; break;
        case CN_EMU_SHFL_DOWN: src = (int)lane + f->arg; if (src > last) src = (int)lane; break;
        case CN_EMU_SHFL_XOR: src = (int)lane ^ (f->arg & 31); if (src > last) src = (int)lane; break;
    }
    if (src < 0 || src > 31 || !(g.mask >> src & 1)) src = (int)lane;   // inactive lane: own value
    return w.fibers[warp * 32 + src]->value;
}

unsigned long long cn_emu_warp(int kind, unsigned mask, unsigned long long value, int arg, int width,
                               const char* file, int line) {
    Worker& w = in_fiber(warp_op_name(kind), file, line);
    Fiber* f = w.cur;
    CN_EMU_TSAN_IGNORE(f);
    unsigned warp = f->linear / 32, lane = f->linear % 32;
    if (!(mask >> lane & 1))
        fiber_fail(w, fmt("%s in %s thread %s at %s: lane %u is not in its own mask 0x%08x", warp_op_name(kind),
                          where(w).c_str(), coords(f->tid).c_str(), site(file, line).c_str(), lane, mask));
    if (width < 1 || width > 32 || (width & (width - 1)))
        fiber_fail(w, fmt("%s in %s thread %s at %s: width %d is not a power of 2 in [1, 32]", warp_op_name(kind),
                          where(w).c_str(), coords(f->tid).c_str(), site(file, line).c_str(), width));
    unsigned n_in_warp = std::min(32u, w.n - warp * 32);
    unsigned exists = n_in_warp == 32 ? 0xffffffffu : ((1u << n_in_warp) - 1);
    unsigned eff = mask & exists;
    f->st = St::Warp;
    f->kind = kind;
    f->mask = mask;
    f->file = file;
    f->line = line;
    f->value = value;
    f->arg = arg;
    f->width = width;
    std::vector<WarpGroup>& groups = w.warps[warp];
    WarpGroup* g = nullptr;
    for (WarpGroup& c : groups)
        if (c.mask == eff) g = &c;
    if (!g) {
        groups.push_back(WarpGroup{eff, 0, kind, file, line});
        g = &groups.back();
    } else if (g->kind != kind) {
        fiber_fail(w, fmt("%s: warp %u: lane %u calls %s at %s while lanes %s wait at %s at %s (same mask 0x%08x)",
                          where(w).c_str(), warp, lane, warp_op_name(kind), site(file, line).c_str(),
                          lanes_text(g->arrived).c_str(), warp_op_name(g->kind), site(g->file, g->line).c_str(), mask));
    }
    g->arrived |= 1u << lane;
#if CN_EMU_TSAN
    __tsan_release(&f->tsan_cell);
#endif
    if (g->arrived != g->mask) {
        to_scheduler(w, f, false);
#if CN_EMU_TSAN
        __tsan_acquire(&f->tsan_inbox);
#endif
        return f->result;
    }
    // The last lane arrived: every lane's result, the others go back in the queue.
    WarpGroup done = *g;
    groups.erase(groups.begin() + (g - groups.data()));
    for (unsigned l = 0; l < 32; l++)
        if (done.mask >> l & 1) w.fibers[warp * 32 + l]->result = warp_result(done, w, warp, l);
#if CN_EMU_TSAN
    for (unsigned l = 0; l < 32; l++)
        if (done.mask >> l & 1) __tsan_acquire(&w.fibers[warp * 32 + l]->tsan_cell);
    for (unsigned l = 0; l < 32; l++)
        if ((done.mask >> l & 1) && l != lane) __tsan_release(&w.fibers[warp * 32 + l]->tsan_inbox);
#endif
    for (unsigned l = 0; l < 32; l++) {
        if (!(done.mask >> l & 1) || l == lane) continue;
        Fiber* o = w.fibers[warp * 32 + l];
        o->st = St::Runnable;
        w.queue.push_back((int)o->linear);
    }
    f->st = St::Runnable;
    return f->result;
}

unsigned cn_emu_activemask() {
    Worker& w = in_fiber("__activemask", "?", 0);
    CN_EMU_TSAN_IGNORE(w.cur);
    unsigned warp = w.cur->linear / 32, m = 0;
    for (unsigned l = 0; l < 32 && warp * 32 + l < w.n; l++)
        if (w.fibers[warp * 32 + l]->st != St::Done) m |= 1u << l;
    return m;
}

void cn_emu_yield() {
    Worker* w = tls_worker;
    if (!w || !w->cur) return;
    Fiber* f = w->cur;
    CN_EMU_TSAN_IGNORE(f);
    w->queue.push_back((int)f->linear);   // stays runnable, runs again after the others
    to_scheduler(*w, f, false);
}

void cn_emu_trap(const char* what, const char* file, int line) {
    Worker& w = in_fiber(what, file, line);
    CN_EMU_TSAN_IGNORE(w.cur);
    fiber_fail(w, fmt("%s in %s thread %s at %s", what, where(w).c_str(), coords(w.cur->tid).c_str(),
                      site(file, line).c_str()));
}
