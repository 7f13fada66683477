// Atomics and assert, for tests/test_emulation.py.

// out[0] += x[i] for every i: float atomicAdd from every thread of every block.
extern "C" __global__ void test_atomic_sum(const float* __restrict__ x, float* __restrict__ out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(out, x[i]);
}

// Integer atomics: c[0] += 1, c[1] = max(id), c[2] = min(id), c[3] counts
// successful CAS 0 -> 1 (exactly one), c[4] ^= id, c[5] = atomicInc(.., 9) wraps,
// big[0] += id (64 bit), big[1] max (64 bit).
extern "C" __global__ void test_atomic_int(int* __restrict__ c, unsigned long long* __restrict__ big,
                                           unsigned int* __restrict__ u, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(&c[0], 1);
    atomicMax(&c[1], i);
    atomicMin(&c[2], i);
    if (atomicCAS(&c[6], 0, 1) == 0) atomicAdd(&c[3], 1);
    atomicXor(&c[4], i);
    atomicInc(&u[0], 9u);
    atomicAdd(&big[0], (unsigned long long)i);
    atomicMax(&big[1], (unsigned long long)i << 33);
    atomicExch(&c[5], 42);
}

// A spin lock per block in shared memory: each thread takes it, does a
// non-atomic read-modify-write of the block's counter, releases it.
extern "C" __global__ void test_spinlock(int* __restrict__ counts)
{
    __shared__ int lock;
    __shared__ int count;
    if (threadIdx.x == 0) { lock = 0; count = 0; }
    __syncthreads();
    while (atomicCAS(&lock, 0, 1) != 0) {}
    int c = count;
    count = c + 1;
    atomicExch(&lock, 0);
    __syncthreads();
    if (threadIdx.x == 0) counts[blockIdx.x] = count;
}

// assert(x[i] >= 0) for every i.
extern "C" __global__ void test_assert(const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) assert(x[i] >= 0.0f);
}

// Reads x[i + offset]: out of bounds for offset > 0 (the ASan test).
extern "C" __global__ void test_oob_read(const float* __restrict__ x, float* __restrict__ y, int n, int offset)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + offset];
}

// Floating-point state of a fiber: the rounding mode and denormal handling are
// the host's defaults; out = 1/3, a float sum in a fixed order, a denormal.
extern "C" __global__ void test_fp(float* out)
{
    if (threadIdx.x == 0) {
        volatile float a = 1.0f, b = 3.0f, tiny = 1e-38f;
        out[0] = a / b;
        out[1] = tiny / 1000.0f;
        out[2] = rsqrtf(4.0f) + __saturatef(2.0f) + fmaxf(-1.0f, 0.5f) + (float)__popc(0xffu) + (float)__clz(1)
               + __uint_as_float(__float_as_uint(1.5f)) + (float)max(3, 4) + min(2.5f, 1.5f) + expf(0.0f)
               + (float)__umulhi(0x80000000u, 4u) + __fdividef(1.0f, 4.0f);
    }
}
