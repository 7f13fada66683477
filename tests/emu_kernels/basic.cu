// Small kernels that exercise the CPU emulation (tests/test_emulation.py);
// they are built into convnet._emu_test, never shipped in convnet._emu.

// out[i] = one record per thread: (threadIdx, blockIdx, blockDim, gridDim) in 3D.
// Thread mapping: one CUDA thread per record, records in global linear order.
extern "C" __global__ void test_coords(unsigned int* __restrict__ out, int n)
{
    unsigned int t = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
    unsigned int b = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
    unsigned int i = b * (blockDim.x * blockDim.y * blockDim.z) + t;
    if (i >= (unsigned int)n) return;
    unsigned int* r = out + 12 * i;
    r[0] = threadIdx.x; r[1] = threadIdx.y; r[2] = threadIdx.z;
    r[3] = blockIdx.x;  r[4] = blockIdx.y;  r[5] = blockIdx.z;
    r[6] = blockDim.x;  r[7] = blockDim.y;  r[8] = blockDim.z;
    r[9] = gridDim.x;   r[10] = gridDim.y;  r[11] = gridDim.z;
}

// y = x + alpha, one thread per element (scalars of every allowed type pass through).
extern "C" __global__ void test_axpb(const float* __restrict__ x, float* __restrict__ y, int n, float alpha,
                                     unsigned int u, unsigned long long big, unsigned char c,
                                     unsigned long long* echo)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] + alpha;
    if (i == 0) { echo[0] = u; echo[1] = big; echo[2] = c; }
}
