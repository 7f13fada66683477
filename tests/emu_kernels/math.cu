// The math and integer intrinsics of bindings/cuda_emu.h, for tests/test_emulation.py.

// out[i*NF + k] = function k of x[i] (x > 0 where a function needs it); the
// list is mirrored by MATH in tests/test_emulation.py.
#define NF 24
extern "C" __global__ void test_math(const float* __restrict__ x, float* __restrict__ out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = __ldg(x + i), a = fabsf(v) + 0.5f;
    float* o = out + (long long)i * NF;
    o[0] = expf(v);          o[1] = logf(a);          o[2] = powf(a, 1.7f);     o[3] = sqrtf(a);
    o[4] = rsqrtf(a);        o[5] = fmaxf(v, 0.25f);  o[6] = fminf(v, 0.25f);   o[7] = fabsf(v);
    o[8] = fmaf(v, 3.0f, 1.0f); o[9] = tanhf(v);      o[10] = exp2f(v);         o[11] = log2f(a);
    o[12] = __expf(v);       o[13] = __logf(a);       o[14] = __powf(a, 1.7f);  o[15] = __fdividef(v, a);
    o[16] = __frsqrt_rn(a);  o[17] = __saturatef(v);  o[18] = max(v, 0.0f);     o[19] = (float)min(i, 7);
    o[20] = __uint_as_float(__float_as_uint(v) & 0x7fffffffu);
    o[21] = __int_as_float(__float_as_int(v));
    o[22] = floorf(v);       o[23] = (float)max(i, 3u);
}

// Integer intrinsics of a[i], b[i]: 8 outputs per element.
extern "C" __global__ void test_int_math(const unsigned int* __restrict__ a, const unsigned int* __restrict__ b,
                                         unsigned int* __restrict__ out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int x = a[i], y = b[i];
    unsigned int* o = out + 8 * i;
    o[0] = __umulhi(x, y);
    o[1] = (unsigned int)__mul24((int)x, (int)y);
    o[2] = __umul24(x, y);
    o[3] = (unsigned int)__popc(x);
    o[4] = (unsigned int)__clz((int)x);
    o[5] = (unsigned int)__ffs((int)x);
    o[6] = __brev(x);
    o[7] = (unsigned int)max((int)x, (int)y);
}

// Grid sum with the "last block" pattern: each block writes its partial sum,
// __threadfence, atomicInc on a counter; the block that comes last adds the
// partials. printf from thread 0 of the last block.
extern "C" __global__ void test_last_block_sum(const float* __restrict__ x, float* __restrict__ partial,
                                               unsigned int* __restrict__ counter, float* __restrict__ out, int n)
{
    __shared__ float s[128];
    __shared__ int last;
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) {
        partial[blockIdx.x] = s[0];
        __threadfence();
        last = atomicInc(counter, gridDim.x - 1) == gridDim.x - 1;
    }
    __syncthreads();
    if (last && t == 0) {
        float sum = 0.0f;
        for (int b = 0; b < (int)gridDim.x; b++) sum += partial[b];
        *out = sum;
        printf("last block %u of %u: sum %.1f\n", blockIdx.x, gridDim.x, sum);
    }
}
