// Kernels that fail on purpose (assert, out-of-bounds reads) and the floating-point
// state of a fiber, for tests/test_emulation.py. Emulation only: assert is not
// available to NVRTC without headers.

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
