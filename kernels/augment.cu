// augment.cu: the paper's training augmentation in one pass -- crop, flip,
// subtract the mean image, add PCA lighting, scale -- uint8 in, float32 out.
//
// Formula (the spec is convnet/data/augment.py, augment_batch):
//     out[n, c, y, x] = ((float)img[n, oy + y, ox + x', c] - mean[oy + y, ox + x', c]
//                        + light[n, c]) * scale
//     x' = flip[n] ? crop - 1 - x : x,   (oy, ox) = offsets[n]
// evaluated in this order in float32 (no contraction is possible: the only
// multiply comes last), so the result is bit-identical to the NumPy version.
// The random parameters (offsets, flips, light = P (alpha * lambda)) are drawn
// on the host and passed in; centre crops are offsets (S-crop)/2, no flip,
// zero light.
// Layout: images (N, S, S, C) uint8, as stored in the prepared shards;
//         mean (S, S, C) float32; offsets (N, 2) int32 [oy, ox]; flips (N,) int32;
//         light (N, C) float32; out (N, C, crop, crop) float32 (NCHW).
// Thread mapping: a 1-D grid-stride loop over the N*C*crop*crop outputs, one
// output element per thread per step, x fastest: writes are coalesced, reads
// of a warp cover 32 neighbouring pixels of one row of one channel (a stride
// of C bytes; the rows are in L1/L2 after the first channel).
// Versions: v1: one output element per thread, grid-stride loop (shipped).
// A per-pixel variant reading the C bytes once was not kept: the kernel moves
// 1 byte in for 4 out and is bound by its writes either way.
#include "common.cuh"

extern "C" __global__ void augment_crop(const unsigned char* __restrict__ images,  // (n, s, s, c)
                                        const float* __restrict__ mean,            // (s, s, c)
                                        const int* __restrict__ offsets,           // (n, 2) [oy, ox]
                                        const int* __restrict__ flips,             // (n,)
                                        const float* __restrict__ light,           // (n, c)
                                        float* __restrict__ out,                   // (n, c, crop, crop)
                                        int n, int s, int c, int crop, float scale) {
    const unsigned long long total = (unsigned long long)n * c * crop * crop;
    for (unsigned long long i = cn_thread_index(); i < total; i += cn_thread_count()) {
        const int x = (int)(i % crop);
        unsigned long long t = i / crop;
        const int y = (int)(t % crop);
        t /= crop;
        const int ch = (int)(t % c);
        const int img = (int)(t / c);
        const int sy = offsets[2 * img] + y;
        const int sx = offsets[2 * img + 1] + (flips[img] ? crop - 1 - x : x);
        const unsigned long long pix = ((unsigned long long)sy * s + sx) * c + ch;
        float v = (float)images[(unsigned long long)img * s * s * c + pix] - mean[pix];
        v = v + light[img * c + ch];
        out[i] = v * scale;
    }
}
