// LightCap's average pool (average_pool.h): for each chunk of 8 channels and each output
// pixel, the k x k input vectors summed row by row (as PyTorch does), then divided by k * k
// (multiplied by 1 / k^2 where that is exact: k a power of two).
// The work items are (chunk, output row) pairs. From nhwc a row's chunks are consecutive items
// (they share the input's cache lines, two chunks to a line); from nChw8c / nChw16c a chunk's
// rows are (one plane read in order: RN50's pools 0.6-0.7 ms, 0.8 with rows first). Compiled
// for AVX2+FMA and baseline x86-64 (kernel_support.h).
#include "average_pool.h"
#include "kernel_support.h"

typedef struct {
    const float *src;
    lightcap_channel_layout src_layout;
    long chunks, width, kernel, out_h, out_w;
    int rows_first;
    float *dst;
    lightcap_channel_layout dst_layout;
} pool_args;

static inline __attribute__((always_inline)) void pool_isa(const pool_args *a, long begin, long end) {
    const long k = a->kernel;
    const v8 count = splat8((float)(k * k)), inverse = splat8(1.0f / (float)(k * k));
    const int exact_inverse = (k & (k - 1)) == 0;  // k * k a power of two: x * (1 / k^2) == x / k^2
    for (long item = begin; item < end; item++) {
        const long oy = a->rows_first ? item / a->chunks : item % a->out_h;
        const long chunk = a->rows_first ? item % a->chunks : item / a->out_h;
        const long in_pixel = a->src_layout.pixel, out_pixel = a->dst_layout.pixel;
        const float *in = a->src + chunk_offset(a->src_layout, chunk) + oy * k * a->width * in_pixel;
        float *out = a->dst + chunk_offset(a->dst_layout, chunk) + oy * a->out_w * out_pixel;
        for (long ox = 0; ox < a->out_w; ox++) {
            v8 sum = splat8(0.0f);
            for (long dy = 0; dy < k; dy++) {
                const float *row = in + (dy * a->width + ox * k) * in_pixel;
                for (long dx = 0; dx < k; dx++) sum += load8(row + dx * in_pixel);
            }
            store8(out + ox * out_pixel, exact_inverse ? sum * inverse : sum / count);
        }
    }
}

AVX2_VARIANT(pool, pool_args, pool_isa)
static void pool_generic(const pool_args *a, long b, long e) { pool_isa(a, b, e); }
static void pool_part(const void *p, long b, long e) { BY_ISA(pool, p, b, e); }

void lightcap_average_pool(const float *src, lightcap_channel_layout src_layout, long channels, long height,
                           long width, long kernel, float *dst, lightcap_channel_layout dst_layout, long threads) {
    const long out_h = height / kernel, out_w = width / kernel;
    pool_args a = {src, src_layout, channels / 8, width, kernel, out_h, out_w, src_layout.outer == 0, dst, dst_layout};
    lightcap_kernel_parallel_for(channels / 8 * out_h, threads, pool_part, &a);
}
