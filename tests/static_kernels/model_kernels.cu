// Small kernels with known machine-code facts, for tests/test_static_model.py.
// Built for sm_90 with the Makefile's nvcc flags; the test reads their SASS.

// 32 FFMA per trip of a loop that is not unrolled (8 independent chains x 4).
extern "C" __global__ void __launch_bounds__(256) fma_loop(float* out, const float* in, float b, float c, int n)
{
    float a[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) a[r] = in[threadIdx.x * 8 + r];
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int r = 0; r < 8; ++r) a[r] = fmaf(a[r], b, c);
    }
    float s = 0.f;
#pragma unroll
    for (int r = 0; r < 8; ++r) s += a[r];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// 40,000 bytes of static shared memory: 5 blocks per SM on sm_90
// (228 KB / (40,000 + 1,024 reserved)), whatever its few registers allow.
extern "C" __global__ void __launch_bounds__(256) smem_40000(float* out, int n)
{
    __shared__ float buf[10000];
    for (int i = threadIdx.x; i < 10000; i += blockDim.x) buf[i] = (float)(i * n);
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = buf[(threadIdx.x * 37) % 10000];
}

// A grid-stride y = a*x + y: one FFMA per 8 bytes read and 4 written. Memory-bound.
extern "C" __global__ void axpy_stream(float* __restrict__ y, const float* __restrict__ x, float a, int n)
{
#pragma unroll 1
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = fmaf(a, x[i], y[i]);
}

// A loop nest: 16 FFMA per inner trip, 2 more per outer trip. The main loop is the
// inner one (the innermost loop with math), though the outer holds more math.
extern "C" __global__ void nested_loops(float* out, float b, float c, int n, int m)
{
    float a0 = threadIdx.x, a1 = a0 + 1.f, a2 = a0 + 2.f, a3 = a0 + 3.f, d = 0.f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
#pragma unroll 1
        for (int j = 0; j < m; ++j) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                a0 = fmaf(a0, b, c); a1 = fmaf(a1, b, c); a2 = fmaf(a2, b, c); a3 = fmaf(a3, b, c);
            }
        }
        d = fmaf(d, a0, c);
        d = fmaf(d, a1, b);
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = d + a2 + a3;
}
