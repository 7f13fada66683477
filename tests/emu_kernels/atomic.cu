// Atomics, for tests/test_emulation.py.

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
