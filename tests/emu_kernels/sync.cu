// Barriers and shared memory, for tests/test_emulation.py.

// out = in^T for a rows x cols matrix, through a 32x33 static shared tile.
// Block (32, 8): each thread moves 4 elements of a 32x32 tile.
// use_barrier = 0 leaves the barrier out: the result must then be wrong.
extern "C" __global__ void test_transpose(const float* __restrict__ in, float* __restrict__ out,
                                          int rows, int cols, int use_barrier)
{
    __shared__ float tile[32][33];
    int bx = blockIdx.x * 32, by = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        int r = by + j, c = bx + threadIdx.x;
        if (r < rows && c < cols) tile[j][threadIdx.x] = in[r * cols + c];
    }
    if (use_barrier) __syncthreads();
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        int r = bx + j, c = by + threadIdx.x;   // out is cols x rows
        if (r < cols && c < rows) out[r * rows + c] = tile[threadIdx.x][j];
    }
}

// out[b] = sum of x[b*blockDim.x .. +blockDim.x), a tree reduction in dynamic
// shared memory (blockDim.x a power of 2). use_barrier = 0: no barrier in the tree.
extern "C" __global__ void test_block_sum(const float* __restrict__ x, float* __restrict__ out, int n,
                                          int use_barrier)
{
    extern __shared__ __align__(16) unsigned char cn_smem[];
    float* s = reinterpret_cast<float*>(cn_smem);
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) s[t] += s[t + half];
        if (use_barrier) __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// Static shared memory is per block: every block writes its id, then reads the
// value of its neighbour thread; out[block] = number of mismatches.
extern "C" __global__ void test_static_shared(int* __restrict__ out)
{
    __shared__ int ids[256];
    __shared__ float scratch[3];
    int b = blockIdx.x + blockIdx.y * gridDim.x;
    ids[threadIdx.x] = b * 1000 + threadIdx.x;
    if (threadIdx.x < 3) scratch[threadIdx.x] = (float)b;
    __syncthreads();
    int other = (threadIdx.x + 1) % blockDim.x;
    int bad = ids[other] != b * 1000 + other;
    bad += scratch[threadIdx.x % 3] != (float)b;
    int total = __syncthreads_count(bad);
    if (threadIdx.x == 0) out[b] = total;
}

// Reads shared memory before anything is written: out gets what was there
// (static tile, then dynamic), as raw bits.
extern "C" __global__ void test_unwritten_shared(unsigned int* __restrict__ out, int dyn_words)
{
    __shared__ unsigned int tile[64];
    extern __shared__ __align__(16) unsigned char cn_smem[];
    const unsigned int* d = reinterpret_cast<const unsigned int*>(cn_smem);
    int t = threadIdx.x;
    if (t < 64) out[t] = tile[t];
    if (t < dyn_words) out[64 + t] = d[t];
    __syncthreads();
    if (t < 64) tile[t] = 7u;   // written after the read: the next block must not see it
}

// __syncthreads_count / _and / _or: out[0..2] for pred[t].
extern "C" __global__ void test_sync_votes(const int* __restrict__ pred, int* __restrict__ out)
{
    int p = pred[threadIdx.x];
    int c = __syncthreads_count(p);
    int a = __syncthreads_and(p);
    int o = __syncthreads_or(p);
    if (threadIdx.x == 0) { out[0] = c; out[1] = a; out[2] = o; }
}

// Broken barriers. mode 0: threads >= 16 return before the barrier;
// 1: two different __syncthreads call sites; 2: only some threads of block 3
// reach it; 3: fine (the same launch must work after an error).
extern "C" __global__ void test_bad_barrier(float* out, int mode)
{
    int t = threadIdx.x;
    if (mode == 0) {
        if (t >= 16) return;
        __syncthreads();
    } else if (mode == 1) {
        if (t % 2) {
            __syncthreads();
        } else {
            __syncthreads();
        }
    } else if (mode == 2) {
        if (blockIdx.x == 3 && t < 64) __syncthreads();
    } else {
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + t] = 1.0f;
}

// A fiber can recurse this deep on its stack: depth levels of ~1 KiB each.
__device__ int deep(int depth, volatile int* sink)
{
    volatile int pad[256];
    pad[depth % 256] = depth;
    if (depth == 0) return pad[0];
    int r = deep(depth - 1, sink) + pad[depth % 256];
    *sink = r;
    return r;
}
extern "C" __global__ void test_recurse(int* out, int depth)
{
    out[threadIdx.x] = deep(depth, out + blockDim.x);
}

// Reads dynamic shared memory word `word`: past the launch's shared_mem when
// word >= shared_mem / 4 (the ASan build reports it).
extern "C" __global__ void test_smem_overrun(float* out, int word)
{
    extern __shared__ __align__(16) unsigned char cn_smem[];
    const float* s = reinterpret_cast<const float*>(cn_smem);
    if (threadIdx.x == 0) out[0] = s[word];
}
