// Warp shuffles and votes, for tests/test_emulation.py.

// out[t] = shuffle of in[t]: kind 0 idx (arg = source lane), 1 up, 2 down
// (arg = delta), 3 xor (arg = lane mask), with width; full mask on every warp
// of the block (blockDim.x a multiple of 32).
extern "C" __global__ void test_shfl(const int* __restrict__ in, int* __restrict__ out, int kind, int arg, int width)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[t], r = 0;
    if (kind == 0) r = __shfl_sync(0xffffffffu, v, arg, width);
    else if (kind == 1) r = __shfl_up_sync(0xffffffffu, v, (unsigned)arg, width);
    else if (kind == 2) r = __shfl_down_sync(0xffffffffu, v, (unsigned)arg, width);
    else r = __shfl_xor_sync(0xffffffffu, v, arg, width);
    out[t] = r;
}

// The same with floats, default width, to check the value's bits pass through.
extern "C" __global__ void test_shfl_float(const float* __restrict__ in, float* __restrict__ out)
{
    int t = threadIdx.x;
    out[t] = __shfl_xor_sync(0xffffffffu, in[t], 1) + __shfl_down_sync(0xffffffffu, in[t], 0);
}

// Votes with the full mask, then with each half of the warp on its own mask.
// out[4*t ..]: ballot, any, all (full mask), ballot (half mask).
extern "C" __global__ void test_vote(const int* __restrict__ pred, unsigned int* __restrict__ out)
{
    int t = threadIdx.x, lane = t % 32;
    int p = pred[t];
    out[4 * t + 0] = __ballot_sync(0xffffffffu, p);
    out[4 * t + 1] = __any_sync(0xffffffffu, p);
    out[4 * t + 2] = __all_sync(0xffffffffu, p);
    unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    out[4 * t + 3] = __ballot_sync(half, p);
    __syncwarp();
}

// Sum of x over the grid: a warp reduction with __shfl_down_sync, then one
// atomicAdd per warp. Works for any blockDim.x: in a partial last warp only
// values of lanes in the mask are added (reading another lane is undefined).
extern "C" __global__ void test_warp_sum(const float* __restrict__ x, float* __restrict__ out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    float v = i < n ? x[i] : 0.0f;
    unsigned mask = __activemask();
    for (int d = 16; d > 0; d /= 2) {
        float o = __shfl_down_sync(mask, v, d);
        if (lane + d < 32 && (mask >> (lane + d) & 1u)) v += o;
    }
    if (lane == 0) atomicAdd(out, v);
}

// Lanes >= 16 exit; the others shuffle with the full mask: an error.
extern "C" __global__ void test_shfl_exited(int* out)
{
    int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, lane, 0);
}

// Bad shuffles. mode 0: width 3; 1: the lane is not in its mask.
extern "C" __global__ void test_shfl_bad(int* out, int mode)
{
    int lane = threadIdx.x % 32;
    if (mode == 0) out[lane] = __shfl_sync(0xffffffffu, lane, 0, 3);
    else out[lane] = __shfl_sync(lane == 5 ? 0xffu & ~(1u << 5) : 0xffffffffu, lane, 0);
}
