// Winograd F(4x4, 3x3) and F(2x2, 3x3) input and output transforms (Lavin & Gray 2015;
// interpolation points 0, +-1, +-2, infinity for 4x4 and 0, +-1, infinity for 2x2), 8 channels
// per vector. The bodies are compiled twice, for AVX2+FMA
// and for baseline x86-64, and chosen once at run time.
#include "winograd.h"

// The vector helpers are always inlined into the per-ISA functions, so their ABI never shows.
#pragma clang diagnostic ignored "-Wpsabi"

#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) const float *chunk_at(const float *base, lightcap_channel_layout l,
                                                                    long chunk, long pixel) {
    return base + (chunk / l.group) * l.outer + (chunk % l.group) * 8 + pixel * l.pixel;
}

// t = B^T d for one column of six values (also used on rows: V = (B^T d) B = B^T (B^T d)^T ...).
static inline __attribute__((always_inline)) void bt6(const v8 d[6], v8 t[6]) {
    const v8 four = {4, 4, 4, 4, 4, 4, 4, 4}, five = {5, 5, 5, 5, 5, 5, 5, 5};
    v8 a = d[4] - four * d[2];  // d4 - 4 d2
    v8 b = d[3] - four * d[1];  // d3 - 4 d1
    v8 c = d[4] - d[2];
    v8 e = d[3] - d[1];
    t[0] = four * d[0] - five * d[2] + d[4];
    t[1] = a + b;
    t[2] = a - b;
    t[3] = c + e + e;
    t[4] = c - e - e;
    t[5] = four * d[1] - five * d[3] + d[5];
}

// o = A^T m for six values.
static inline __attribute__((always_inline)) void at6(const v8 m[6], v8 o[4]) {
    v8 p = m[1] + m[2], q = m[1] - m[2], r = m[3] + m[4], s = m[3] - m[4];
    o[0] = m[0] + p + r;
    o[1] = q + s + s;
    o[2] = p + 4 * r;
    o[3] = q + 8 * s + m[5];
}

// t = B^T d for four values (F(2x2, 3x3)).
static inline __attribute__((always_inline)) void bt4(const v8 d[4], v8 t[4]) {
    t[0] = d[0] - d[2];
    t[1] = d[1] + d[2];
    t[2] = d[2] - d[1];
    t[3] = d[1] - d[3];
}

// o = A^T m for four values (F(2x2, 3x3)).
static inline __attribute__((always_inline)) void at4(const v8 m[4], v8 o[2]) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
}

// B^T / A^T for a tile of T outputs (T = 4 or 2: always a constant where inlined).
static inline __attribute__((always_inline)) void bt(int T, const v8 *d, v8 *t) {
    if (T == 4) bt6(d, t); else bt4(d, t);
}

static inline __attribute__((always_inline)) void at(int T, const v8 *m, v8 *o) {
    if (T == 4) at6(m, o); else at4(m, o);
}

static inline __attribute__((always_inline)) void input_body(
    const int T, const float *src, lightcap_channel_layout l, long height, long width, long channels, long pad,
    long tiles_w, long tiles, long tile0, long tile1, float *v) {
    const int N = T + 2;  // input tile side
    const long chunks = channels / 8;
    const v8 zero = {0};
    for (long t = tile0; t < tile1; t++) {
        const long y0 = (t / tiles_w) * T - pad, x0 = (t % tiles_w) * T - pad;
        const int inside = y0 >= 0 && x0 >= 0 && y0 + N <= height && x0 + N <= width;
        for (long k = 0; k < chunks; k++) {
            v8 d[6][6], w[6][6];
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < N; j++) {
                    const long y = y0 + i, x = x0 + j;
                    d[i][j] = (inside || (y >= 0 && y < height && x >= 0 && x < width))
                        ? load8(chunk_at(src, l, k, y * width + x)) : zero;
                }
            }
            for (int j = 0; j < N; j++) {  // columns: w[.][j] = B^T d[.][j]
                v8 col[6], out[6];
                for (int i = 0; i < N; i++) col[i] = d[i][j];
                bt(T, col, out);
                for (int i = 0; i < N; i++) w[i][j] = out[i];
            }
            for (int i = 0; i < N; i++) {  // rows: V[i][.] = w[i][.] B
                v8 out[6];
                bt(T, w[i], out);
                for (int j = 0; j < N; j++) store8(v + ((i * N + j) * tiles + t) * channels + k * 8, out[j]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void output_body(
    const int T, const float *m, long tiles, long channels, const float *bias, int relu, float *dst,
    lightcap_channel_layout l, long out_h, long out_w, long tiles_w, long tile0, long tile1) {
    const int N = T + 2;
    const long chunks = channels / 8;
    const v8 zero = {0};
    for (long t = tile0; t < tile1; t++) {
        const long y0 = (t / tiles_w) * T, x0 = (t % tiles_w) * T;
        for (long k = 0; k < chunks; k++) {
            v8 w[4][6];
            for (int j = 0; j < N; j++) {  // columns: w[.][j] = A^T M[.][j]
                v8 col[6], out[4];
                for (int i = 0; i < N; i++) col[i] = load8(m + ((i * N + j) * tiles + t) * channels + k * 8);
                at(T, col, out);
                for (int i = 0; i < T; i++) w[i][j] = out[i];
            }
            const v8 b = bias ? load8(bias + k * 8) : zero;
            for (int i = 0; i < T; i++) {  // rows: Y[i][.] = w[i][.] A
                if (y0 + i >= out_h) break;
                v8 out[4];
                at(T, w[i], out);
                for (int j = 0; j < T && x0 + j < out_w; j++) {
                    v8 y = out[j] + b;
                    if (relu) y = __builtin_elementwise_max(y, zero);
                    store8((float *)chunk_at(dst, l, k, (y0 + i) * out_w + x0 + j), y);
                }
            }
        }
    }
}

// The products M[xi] = V[xi] U[xi] ([tiles, in] x [in, out]) for few tiles, where a general
// GEMM that packs U on every call spends as long packing as multiplying: U is packed once, at
// load, in panels of 16 output channels ([panel][in][16], zero-padded), and a 6x16 register
// block (12 accumulators) runs down each panel for 6 rows of V at a time.
enum { PANEL = 16, ROWS = 6 };

static inline __attribute__((always_inline)) void block(const int R, const float *v, long in, const float *panel,
                                                        float *m, long out, int vectors) {
    v8 c[ROWS][2];
    for (int r = 0; r < R; r++) c[r][0] = c[r][1] = (v8){0};
    for (long k = 0; k < in; k++) {
        const v8 b0 = load8(panel + k * PANEL), b1 = load8(panel + k * PANEL + 8);
        for (int r = 0; r < R; r++) {
            const float s = v[r * in + k];
            const v8 a = {s, s, s, s, s, s, s, s};
            c[r][0] += a * b0;
            c[r][1] += a * b1;
        }
    }
    for (int r = 0; r < R; r++) {
        store8(m + r * out, c[r][0]);
        if (vectors == 2) store8(m + r * out + 8, c[r][1]);
    }
}

static inline __attribute__((always_inline)) void products_body(const float *v, const float *packed, long tiles,
                                                                long in, long out, long p0, long p1, float *m) {
    const long panels = (out + PANEL - 1) / PANEL;
    for (long p = p0; p < p1; p++) {
        const float *vp = v + p * tiles * in;
        float *mp = m + p * tiles * out;
        for (long q = 0; q < panels; q++) {
            const float *panel = packed + (p * panels + q) * in * PANEL;
            const int vectors = out - q * PANEL >= PANEL ? 2 : 1;  // out % 8 == 0
            long t = 0;
            for (; t + ROWS <= tiles; t += ROWS) block(ROWS, vp + t * in, in, panel, mp + t * out + q * PANEL, out, vectors);
            const float *vt = vp + t * in;
            float *mt = mp + t * out + q * PANEL;
            switch (tiles - t) {
            case 5: block(5, vt, in, panel, mt, out, vectors); break;
            case 4: block(4, vt, in, panel, mt, out, vectors); break;
            case 3: block(3, vt, in, panel, mt, out, vectors); break;
            case 2: block(2, vt, in, panel, mt, out, vectors); break;
            case 1: block(1, vt, in, panel, mt, out, vectors); break;
            default: break;
            }
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma")))
static void input_avx2(long tile, const float *src, lightcap_channel_layout l, long h, long w, long c, long pad,
                       long tw, long tiles, long t0, long t1, float *v) {
    if (tile == 4) input_body(4, src, l, h, w, c, pad, tw, tiles, t0, t1, v);
    else input_body(2, src, l, h, w, c, pad, tw, tiles, t0, t1, v);
}

__attribute__((target("avx2,fma")))
static void output_avx2(long tile, const float *m, long tiles, long c, const float *bias, int relu, float *dst,
                        lightcap_channel_layout l, long oh, long ow, long tw, long t0, long t1) {
    if (tile == 4) output_body(4, m, tiles, c, bias, relu, dst, l, oh, ow, tw, t0, t1);
    else output_body(2, m, tiles, c, bias, relu, dst, l, oh, ow, tw, t0, t1);
}

__attribute__((target("avx2,fma")))
static void products_avx2(const float *v, const float *packed, long tiles, long in, long out, long p0, long p1,
                          float *m) {
    products_body(v, packed, tiles, in, out, p0, p1, m);
}

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
}
#else
static int has_avx2(void) { return 0; }
#endif

static void input_generic(long tile, const float *src, lightcap_channel_layout l, long h, long w, long c, long pad,
                          long tw, long tiles, long t0, long t1, float *v) {
    if (tile == 4) input_body(4, src, l, h, w, c, pad, tw, tiles, t0, t1, v);
    else input_body(2, src, l, h, w, c, pad, tw, tiles, t0, t1, v);
}

static void output_generic(long tile, const float *m, long tiles, long c, const float *bias, int relu, float *dst,
                           lightcap_channel_layout l, long oh, long ow, long tw, long t0, long t1) {
    if (tile == 4) output_body(4, m, tiles, c, bias, relu, dst, l, oh, ow, tw, t0, t1);
    else output_body(2, m, tiles, c, bias, relu, dst, l, oh, ow, tw, t0, t1);
}

static void products_generic(const float *v, const float *packed, long tiles, long in, long out, long p0, long p1,
                             float *m) {
    products_body(v, packed, tiles, in, out, p0, p1, m);
}

void lightcap_winograd_input(long tile, const float *src, lightcap_channel_layout layout, long height, long width,
                             long channels, long pad, long tiles_w, long tiles, long tile0, long tile1,
                             float *v) {
#if defined(__x86_64__)
    if (has_avx2()) {
        input_avx2(tile, src, layout, height, width, channels, pad, tiles_w, tiles, tile0, tile1, v);
        return;
    }
#endif
    input_generic(tile, src, layout, height, width, channels, pad, tiles_w, tiles, tile0, tile1, v);
}

void lightcap_winograd_output(long tile, const float *m, long tiles, long channels, const float *bias, int relu,
                              float *dst, lightcap_channel_layout layout, long out_h, long out_w,
                              long tiles_w, long tile0, long tile1) {
#if defined(__x86_64__)
    if (has_avx2()) {
        output_avx2(tile, m, tiles, channels, bias, relu, dst, layout, out_h, out_w, tiles_w, tile0, tile1);
        return;
    }
#endif
    output_generic(tile, m, tiles, channels, bias, relu, dst, layout, out_h, out_w, tiles_w, tile0, tile1);
}

long lightcap_winograd_packed_floats(long points, long in, long out) {
    return points * ((out + PANEL - 1) / PANEL) * in * PANEL;
}

void lightcap_winograd_pack(const float *u, long points, long in, long out, float *packed) {
    const long panels = (out + PANEL - 1) / PANEL;
    for (long p = 0; p < points; p++)
        for (long q = 0; q < panels; q++)
            for (long k = 0; k < in; k++)
                for (long j = 0; j < PANEL; j++) {
                    const long n = q * PANEL + j;
                    packed[((p * panels + q) * in + k) * PANEL + j] = n < out ? u[(p * in + k) * out + n] : 0.0f;
                }
}

void lightcap_winograd_products(const float *v, const float *packed, long tiles, long in, long out, long p0, long p1,
                                float *m) {
#if defined(__x86_64__)
    if (has_avx2()) {
        products_avx2(v, packed, tiles, in, out, p0, p1, m);
        return;
    }
#endif
    products_generic(v, packed, tiles, in, out, p0, p1, m);
}

const char *lightcap_winograd_isa(void) { return has_avx2() ? "avx2+fma" : "generic"; }
