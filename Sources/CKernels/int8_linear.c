// LightCap's weight-only INT8 fully connected layer (int8_linear.h). For each panel of 16
// output rows (two panels at a time on AVX-512, or for one or two input rows) and each block of
// up to 4 input rows, one accumulator of 16 per input row and panel sums over k: the panel's 16
// levels at k (16 consecutive bytes) are widened to F32 once and multiplied with each row's x[k]
// broadcast. A panel is 16 x in bytes (5 KB at in = 312), so it stays in L1 for the row blocks
// after the first. The sum runs over k in order, one multiply-add per term (fused on AVX-512 and
// AVX2+FMA, a multiply then an add on the generic path), so a row's result does not depend on
// the other rows. Compiled for AVX-512, AVX2+FMA and baseline x86-64 (kernel_support.h): the
// 16 outputs of a panel are one vector, two or four.
#include "int8_linear.h"
#include "kernel_support.h"

enum { PANEL = 16, ROW_BLOCK = 4 };

long lightcap_int8_linear_packed_bytes(long out, long in) { return (out + PANEL - 1) / PANEL * in * PANEL; }

void lightcap_int8_linear_pack(const int8_t *levels, long out, long in, int8_t *packed) {
    const long panels = (out + PANEL - 1) / PANEL;
    for (long p = 0; p < panels; p++)
        for (long k = 0; k < in; k++)
            for (long o = 0; o < PANEL; o++) {
                const long n = p * PANEL + o;
                packed[(p * in + k) * PANEL + o] = n < out ? levels[n * in + k] : 0;
            }
}

typedef struct {
    const float *x;
    long rows, in;
    const int8_t *packed;
    const float *scales, *bias;
    long out;
    float *y;
} linear_args;

typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef int8_t i8x16 __attribute__((vector_size(16)));

// A panel's 16 levels at one k, widened to F32: one vector on AVX-512, two on AVX2, four on
// baseline x86-64 (the same operations per value on each).
static inline __attribute__((always_inline)) v16 widen16(const int8_t *p) {
    i8x16 b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(__builtin_convertvector(b, i32x16), v16);
}

// Rows r0 .. r0 + M - 1 of NP consecutive panels, into acc[r][NP] (M, NP constants in each
// copy): M NP accumulators of 16 in registers, each one multiply-add per k. A multiply-add
// waits for the previous one into the same accumulator (4 cycles), so enough independent ones
// keep the FMA units busy: one or two rows take two panels at a time.
static inline __attribute__((always_inline)) void panel_rows(const linear_args *a, long p, long NP, long r0, long M,
                                                             v16 acc[][2]) {
    const long in = a->in;
    const float *x = a->x + r0 * in;
    const int8_t *panel = a->packed + p * in * PANEL;
    for (long r = 0; r < M; r++)
        for (long j = 0; j < NP; j++) acc[r][j] = splat16(0.0f);
    for (long k = 0; k < in; k++) {
        v16 w[2];
        for (long j = 0; j < NP; j++) w[j] = widen16(panel + (j * in + k) * PANEL);
        for (long r = 0; r < M; r++) {
            const v16 xs = splat16(x[r * in + k]);
            for (long j = 0; j < NP; j++) acc[r][j] += xs * w[j];
        }
    }
}

// y of rows r0 .. r0 + m - 1 at the outputs of panels p .. p + np - 1, from the sums in acc.
static inline __attribute__((always_inline)) void store_rows(const linear_args *a, long p, long np, long r0, long m,
                                                             v16 acc[][2]) {
    for (long j = 0; j < np; j++) {
        const long n0 = (p + j) * PANEL, valid = a->out - n0 < PANEL ? a->out - n0 : PANEL;
        for (long r = 0; r < m; r++) {
            float sums[PANEL];
            memcpy(sums, &acc[r][j], sizeof sums);
            float *y = a->y + (r0 + r) * a->out + n0;
            for (long o = 0; o < valid; o++) y[o] = sums[o] * a->scales[n0 + o] + (a->bias ? a->bias[n0 + o] : 0.0f);
        }
    }
}

// `pairs_always`: two panels at a time for any number of rows (AVX-512's 32 registers hold the
// 8 accumulators of 4 rows; AVX2's 16 hold 8 halves, so there only for one or two rows).
static inline __attribute__((always_inline)) void linear_isa(const linear_args *a, long begin, long end, int pairs_always) {
    for (long p = begin; p < end;) {
        const long np = p + 1 < end && (pairs_always || a->rows <= 2) ? 2 : 1;
        for (long r0 = 0; r0 < a->rows; r0 += ROW_BLOCK) {
            const long m = a->rows - r0 < ROW_BLOCK ? a->rows - r0 : ROW_BLOCK;
            v16 acc[ROW_BLOCK][2];
            if (np == 2 && m == 1) panel_rows(a, p, 2, r0, 1, acc);
            else if (np == 2 && m == 2) panel_rows(a, p, 2, r0, 2, acc);
            else if (np == 2 && m == 3) panel_rows(a, p, 2, r0, 3, acc);
            else if (np == 2) panel_rows(a, p, 2, r0, 4, acc);
            else if (m == 1) panel_rows(a, p, 1, r0, 1, acc);
            else if (m == 2) panel_rows(a, p, 1, r0, 2, acc);
            else if (m == 3) panel_rows(a, p, 1, r0, 3, acc);
            else panel_rows(a, p, 1, r0, 4, acc);
            store_rows(a, p, np, r0, m, acc);
        }
        p += np;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static void linear_avx512(const linear_args *a, long b, long e) {
    linear_isa(a, b, e, 1);
}
#endif
static inline __attribute__((always_inline)) void linear_narrow(const linear_args *a, long b, long e) { linear_isa(a, b, e, 0); }
AVX2_VARIANT(linear, linear_args, linear_narrow)
static void linear_generic(const linear_args *a, long b, long e) { linear_narrow(a, b, e); }

static void linear_part(const void *p, long b, long e) {
#if defined(__x86_64__)
    if (lightcap_kernel_has_avx512()) return linear_avx512(p, b, e);
#endif
    BY_ISA(linear, p, b, e);
}

const char *lightcap_int8_linear_isa(void) {
    return lightcap_kernel_has_avx512() ? "avx512" : lightcap_kernel_isa();
}

void lightcap_int8_linear(const float *x, long rows, long in, const int8_t *packed, const float *scales,
                          const float *bias, long out, float *y, long threads) {
    linear_args a = {x, rows, in, packed, scales, bias, out, y};
    lightcap_kernel_parallel_for((out + PANEL - 1) / PANEL, threads, linear_part, &a);
}
