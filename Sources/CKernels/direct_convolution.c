// LightCap's direct convolution (direct_convolution.h). The input is first
// copied, zero-padded, into [in / 8][height + 2 pad][width + 2 pad][8]; then for each panel of
// 16 output channels and each block of up to 6 output pixels (consecutive in row-major order,
// crossing row ends: 49 pixels are 4 blocks of 6 and 5 of 5, not 7 rows of 7), 2 accumulators
// per pixel sum over the input channels and the k x k taps, broadcasting one input value per
// pixel against the panel's two vectors of packed weights. The input channels go in chunks
// of 256, so a panel's chunk of weights (147 KB for 3x3) stays in L2 across the pixel blocks
// that reuse it; the panel after it is prefetched from memory meanwhile, a slice per block.
// Each chunk adds to what the previous ones left in dst (the first to zero, or to the residual).
// The bodies are compiled twice, for AVX2+FMA and for baseline x86-64 (kernel_support.h).
#include "direct_convolution.h"
#include "kernel_support.h"

enum { PANEL = 16, MAX_PIXELS = 6, CHUNK_BLOCKS = 32 /* input channels / 8 per chunk */, MAX_TAPS = 49 };

long lightcap_direct_weight_floats(long out_channels, long in_channels, long kernel) {
    return out_channels * in_channels * kernel * kernel;
}

typedef struct {
    const float *weight;
    long out, in, k;
    float *packed;
} weights_args;

// Panels [p0, p1): each written in order (one sequential stream) from a tile of its 16 rows,
// copied a run of whole cache lines at a time (8 input channels x k x k floats per row, 64
// input channels for 1x1). RN50's layer4 layers: 0.9-2.7 ms each into memory already touched
// (a memcpy of the same bytes 0.4-1.0 ms), 4.4-8.9 ms into fresh memory (page faults); a
// plain loop (scattered stores) takes 6.4-13 ms into fresh memory.
static void weights_part(const void *p, long p0, long p1) {
    const weights_args *a = p;
    const long taps = a->k * a->k, blocks8 = a->in / 8;
    const long group = taps == 1 ? 8 : 1;  // channel blocks per tile
    float tile[PANEL * 8 * MAX_TAPS];
    for (long q = p0; q < p1; q++) {
        float *out = a->packed + q * PANEL * a->in * taps;
        for (long c0 = 0; c0 < blocks8; c0 += group) {
            const long n = (c0 + group < blocks8 ? group : blocks8 - c0) * 8 * taps;  // floats per row
            for (long o = 0; o < PANEL; o++)
                memcpy(tile + o * n, a->weight + ((q * PANEL + o) * a->in + c0 * 8) * taps, (size_t)n * sizeof(float));
            for (long c = 0; c < n / (8 * taps); c++)
                for (long t = 0; t < taps; t++)
                    for (long i = 0; i < 8; i++)
                        for (long o = 0; o < PANEL; o++) *out++ = tile[o * n + (c * 8 + i) * taps + t];
        }
    }
}

void lightcap_direct_weights(const float *weight, long out, long in, long k, float *packed, long threads) {
    weights_args a = {weight, out, in, k, packed};
    lightcap_kernel_parallel_for(out / PANEL, threads, weights_part, &a);
}

long lightcap_direct_scratch_floats(long in_channels, long height, long width, long pad) {
    return in_channels * (height + 2 * pad) * (width + 2 * pad);
}

typedef struct {
    const float *src;
    lightcap_channel_layout src_layout;
    long in, height, width, k, stride, pad;
    const float *packed, *bias;
    int relu, accumulate;
    long out;
    float *dst;
    lightcap_channel_layout dst_layout;
    long out_h, out_w;
    float *padded;
} direct_args;

// The padded copy of the input channel chunks [c0, c1).
static inline __attribute__((always_inline)) void pad_body(const direct_args *a, long c0, long c1) {
    const long hp = a->height + 2 * a->pad, wp = a->width + 2 * a->pad;
    for (long c = c0; c < c1; c++) {
        float *plane = a->padded + c * hp * wp * 8;
        memset(plane, 0, (size_t)(a->pad * wp * 8) * sizeof(float));
        memset(plane + (a->pad + a->height) * wp * 8, 0, (size_t)(a->pad * wp * 8) * sizeof(float));
        for (long y = 0; y < a->height; y++) {
            float *row = plane + (a->pad + y) * wp * 8;
            memset(row, 0, (size_t)(a->pad * 8) * sizeof(float));
            memset(row + (a->pad + a->width) * 8, 0, (size_t)(a->pad * 8) * sizeof(float));
            for (long x = 0; x < a->width; x++)
                store8(row + (a->pad + x) * 8, load8(chunk_at(a->src, a->src_layout, c, y * a->width + x)));
        }
    }
}

// R (1 to 6) output pixels x 16 output channels, summed over the chunk's `steps` (channel
// chunk, tap) pairs: `in[r] + offsets[s] + c` is input channel c of the pair s for pixel r;
// `w` the panel's packed weights from the chunk's first channel on. first: the sum starts at
// zero (else at dst: the previous chunks' sum, or the residual); last: bias and ReLU are
// applied. `prefetch` lines from `next` (the next panel's weights) are fetched into the cache
// along the way; past the end of the weights they are harmless (prefetches never fault).
static inline __attribute__((always_inline)) void pixel_block(
    const int R, const float *const in[MAX_PIXELS], const long *offsets, long steps, const float *w,
    float *const out[MAX_PIXELS], long out_second, int first, int last, const float *bias, int relu,
    const float *next, long prefetch) {
    v8 acc0[MAX_PIXELS], acc1[MAX_PIXELS];
    // Fully unrolled, so the accumulators live in registers (without the pragmas clang -O2,
    // SwiftPM's release level, leaves the channel loop rolled and the accumulators in memory:
    // 2.5x slower).
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = splat8(0);
    for (long s = 0; s < steps; s++) {
        const long o = offsets[s];
        if (s < prefetch) __builtin_prefetch(next + s * PANEL);
#pragma clang loop unroll(full)
        for (int c = 0; c < 8; c++) {
            const v8 w0 = load8(w), w1 = load8(w + 8);
            w += PANEL;
#pragma clang loop unroll(full)
            for (int r = 0; r < R; r++) {
                const v8 x = splat8(in[r][o + c]);
                acc0[r] += x * w0;
                acc1[r] += x * w1;
            }
        }
    }
    const v8 zero = splat8(0);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *d0 = out[r], *d1 = out[r] + out_second;
        if (!first) {
            acc0[r] += load8(d0);
            acc1[r] += load8(d1);
        }
        if (last) {
            if (bias) {
                acc0[r] += load8(bias);
                acc1[r] += load8(bias + 8);
            }
            if (relu) {
                acc0[r] = __builtin_elementwise_max(acc0[r], zero);
                acc1[r] = __builtin_elementwise_max(acc1[r], zero);
            }
        }
        store8(d0, acc0[r]);
        store8(d1, acc1[r]);
    }
}

// The output channel panels [p0, p1).
static inline __attribute__((always_inline)) void convolution_body(const direct_args *a, long p0, long p1) {
    const long k = a->k, taps = k * k, blocks8 = a->in / 8;
    const long wp = a->width + 2 * a->pad, plane = (a->height + 2 * a->pad) * wp * 8;
    const long pixels = a->out_h * a->out_w;
    // Blocks as even as can be: 49 pixels are 4 blocks of 6 and 5 of 5 (not 8 of 6 and 1 of 1).
    const long nblocks = (pixels + MAX_PIXELS - 1) / MAX_PIXELS;
    const long base = pixels / nblocks, longer = pixels % nblocks;  // `longer` blocks of base + 1
    long offsets[CHUNK_BLOCKS * MAX_TAPS];
    for (long c0 = 0; c0 < blocks8; c0 += CHUNK_BLOCKS) {
        const long c1 = c0 + CHUNK_BLOCKS < blocks8 ? c0 + CHUNK_BLOCKS : blocks8;
        const long steps = (c1 - c0) * taps;
        for (long c = c0; c < c1; c++)
            for (long i = 0; i < k; i++)
                for (long j = 0; j < k; j++) offsets[(c - c0) * taps + i * k + j] = (c - c0) * plane + (i * wp + j) * 8;
        const float *chunk_in = a->padded + c0 * plane;
        for (long p = p0; p < p1; p++) {
            const float *w = a->packed + (p * blocks8 + c0) * taps * 8 * PANEL;
            // The next panel's weights (this chunk's, or the next chunk's first), in slices.
            const float *next = p + 1 < p1 ? a->packed + ((p + 1) * blocks8 + c0) * taps * 8 * PANEL
                              : c1 < blocks8 ? a->packed + (p0 * blocks8 + c1) * taps * 8 * PANEL : 0;
            const long lines = steps * 8;  // 64-byte lines of a panel's chunk (one per 16 floats)
            const float *bias = a->bias ? a->bias + p * PANEL : 0;
            const long out0 = chunk_offset(a->dst_layout, 2 * p), out_second = chunk_offset(a->dst_layout, 2 * p + 1) - out0;
            long pixel = 0;
            for (long b = 0; b < nblocks; b++) {
                const int R = (int)(b < longer ? base + 1 : base);
                const float *in[MAX_PIXELS];
                float *out[MAX_PIXELS];
                for (int r = 0; r < R; r++) {
                    const long y = (pixel + r) / a->out_w, x = (pixel + r) % a->out_w;
                    in[r] = chunk_in + (y * a->stride * wp + x * a->stride) * 8;
                    out[r] = a->dst + out0 + (pixel + r) * a->dst_layout.pixel;
                }
                const long l0 = lines * b / nblocks, l1 = lines * (b + 1) / nblocks;
                const float *pf = next ? next + l0 * PANEL : 0;
                const long npf = next ? l1 - l0 : 0;
                const int first = c0 == 0 && !a->accumulate, last = c1 == blocks8;
#define BLOCK(n) pixel_block(n, in, offsets, steps, w, out, out_second, first, last, bias, a->relu, pf, npf)
                switch (R) {
                case 6: BLOCK(6); break;
                case 5: BLOCK(5); break;
                case 4: BLOCK(4); break;
                case 3: BLOCK(3); break;
                case 2: BLOCK(2); break;
                default: BLOCK(1); break;
                }
#undef BLOCK
                pixel += R;
            }
        }
    }
}

static inline __attribute__((always_inline)) void pad_isa(const direct_args *a, long b, long e) { pad_body(a, b, e); }
static inline __attribute__((always_inline)) void convolution_isa(const direct_args *a, long b, long e) {
    convolution_body(a, b, e);
}
AVX2_VARIANT(pad, direct_args, pad_isa)
AVX2_VARIANT(convolution, direct_args, convolution_isa)
static void pad_generic(const direct_args *a, long b, long e) { pad_isa(a, b, e); }
static void convolution_generic(const direct_args *a, long b, long e) { convolution_isa(a, b, e); }
static void pad_part(const void *p, long b, long e) { BY_ISA(pad, p, b, e); }
static void convolution_part(const void *p, long b, long e) { BY_ISA(convolution, p, b, e); }

void lightcap_direct_convolution(const float *src, lightcap_channel_layout src_layout, long in_channels, long height,
                                 long width, long kernel, long stride, long pad, const float *packed,
                                 const float *bias, int relu, int accumulate, long out_channels, float *dst,
                                 lightcap_channel_layout dst_layout, long out_h, long out_w, float *scratch,
                                 long threads) {
    direct_args a = {src, src_layout, in_channels, height, width, kernel, stride, pad, packed, bias, relu, accumulate,
                     out_channels, dst, dst_layout, out_h, out_w, scratch};
    lightcap_kernel_parallel_for(in_channels / 8, threads, pad_part, &a);
    lightcap_kernel_parallel_for(out_channels / PANEL, threads, convolution_part, &a);
}
