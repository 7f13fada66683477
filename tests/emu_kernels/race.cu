// Races planted for the ThreadSanitizer build (tests/test_tsan.py, `make emu-tsan`),
// each with a race-free twin.

// Every thread writes its id into word 0 of out: a write-write race on global
// memory between the threads of a block (race = 1), or thread 0 alone (race = 0).
extern "C" __global__ void test_race_global(int* __restrict__ out, int race)
{
    if (race || threadIdx.x == 0) out[0] = (int)threadIdx.x;
}

// Each thread writes its slot of a shared array and reads its neighbour's:
// a race without the barrier between (use_barrier = 0).
extern "C" __global__ void test_race_shared(float* __restrict__ out, int use_barrier)
{
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = (float)t;
    if (use_barrier) __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
}

// The same within a warp, ordered by __syncwarp (use_sync = 1) or not at all.
extern "C" __global__ void test_race_warp(float* __restrict__ out, int use_sync)
{
    __shared__ float s[32];
    const int lane = threadIdx.x % 32;
    s[lane] = (float)lane;
    if (use_sync) __syncwarp();
    out[threadIdx.x] = s[(lane + 1) % 32];
}

// Every thread adds to one word with atomicAdd: never a race.
extern "C" __global__ void test_race_atomic(int* __restrict__ out)
{
    atomicAdd(out, 1);
}
