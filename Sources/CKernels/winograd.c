// Winograd F(4x4, 3x3) and F(2x2, 3x3) (Lavin & Gray 2015; interpolation points 0, +-1, +-2,
// infinity for 4x4 and 0, +-1, infinity for 2x2): weight, input and output transforms, 8
// channels per vector, and a products kernel for few tiles. The bodies are compiled twice, for
// AVX2+FMA and for baseline x86-64, and chosen once at run time.
#include "winograd.h"
#include "kernel_support.h"

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

// B^T and A^T for output tiles of side T (4 or 2: a constant wherever these are inlined).
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

// The products M[xi] = V[xi] U[xi] ([tiles, in] x [in, out]) for few tiles (at most a few
// dozen), where a general GEMM that packs U on every call (oneDNN's AVX2 matmul) spends about
// as long packing as multiplying. U is packed once, at load, in groups of 6 output channels
// ([group][in][6], zero-padded), and read exactly once per 16 tiles: a register block of 6
// output channels x 16 tiles (12 accumulators, 8 tiles per vector) runs down each group,
// broadcasting U and loading V transposed ([in][16], built per point). U of such a layer is
// MBs and comes from memory: one sequential stream of 24 bytes per 12 FMAs (12 GB/s at the
// FMA peak of an AVX2 EPYC, whose one core reads 13-16 GB/s). A block of 6 tiles x 16
// channels would read U three times for 16 tiles, the first pass from memory at 6 cycles per
// cache line; measured on that EPYC, this kernel runs RN50's 16-tile products 20-25% faster.
enum { GROUP = 6, BLOCK_TILES = 16 };

// acc[r][j] lane l = sum_k U[k][r] Vt[k][8 j + l], for TV = 1 or 2 tile vectors.
static inline __attribute__((always_inline)) void group_block(const int TV, const float *vt, const float *u,
                                                              long in, v8 acc[GROUP][2]) {
    for (int r = 0; r < GROUP; r++) acc[r][0] = acc[r][1] = (v8){0};
    for (long k = 0; k < in; k++) {
        __builtin_prefetch(u + k * GROUP + 256);  // 1 KB ahead in U's stream
        const v8 b0 = load8(vt + k * BLOCK_TILES), b1 = TV == 2 ? load8(vt + k * BLOCK_TILES + 8) : (v8){0};
        for (int r = 0; r < GROUP; r++) {
            const float s = u[k * GROUP + r];
            const v8 a = {s, s, s, s, s, s, s, s};
            acc[r][0] += a * b0;
            if (TV == 2) acc[r][1] += a * b1;
        }
    }
}

// Transposes the 8x8 block r[i][j] in place (r[i] becomes column i).
static inline __attribute__((always_inline)) void transpose8(v8 r[8]) {
    v8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

// V's transposed block Vt: at most CHUNK input channels x 16 tiles (32 KB, on the stack); more
// input channels are summed chunk by chunk into M.
enum { CHUNK = 512 };

// Vt[k][t] = V[t][k] for k < kn (a multiple of 8) and t < nt, zero for t >= nt; V rows `in` apart.
static inline __attribute__((always_inline)) void transpose_tiles(const float *v, long in, long nt, long kn,
                                                                  float *vt) {
    const v8 zero = {0};
    for (long k = 0; k < kn; k += 8) {
        for (int half = 0; half < 2; half++) {
            v8 r[8];
            for (int i = 0; i < 8; i++) {
                const long t = half * 8 + i;
                r[i] = t < nt ? load8(v + t * in + k) : zero;
            }
            transpose8(r);
            for (int j = 0; j < 8; j++) store8(vt + (k + j) * BLOCK_TILES + half * 8, r[j]);
        }
    }
}

// M[t][0..channels) (+)= the block's values for tile t, for the block's nt tiles; rows `out` apart.
static inline __attribute__((always_inline)) void store_group(v8 acc[GROUP][2], long nt, long channels, int add,
                                                              float *m, long out) {
    const v8 zero = {0};
    for (int half = 0; half < 2 && half * 8 < nt; half++) {
        v8 r[8];
        for (int i = 0; i < GROUP; i++) r[i] = acc[i][half];
        r[6] = r[7] = zero;
        transpose8(r);  // r[i]: the 6 channels (and two zeros) of tile half * 8 + i
        for (int i = 0; i < 8 && half * 8 + i < nt; i++) {
            float *row = m + (half * 8 + i) * out;
            if (channels == GROUP && !add) {
                v4 a = __builtin_shufflevector(r[i], r[i], 0, 1, 2, 3);
                v2 b = __builtin_shufflevector(r[i], r[i], 4, 5);
                memcpy(row, &a, sizeof a);
                memcpy(row + 4, &b, sizeof b);
            } else {
                for (long c = 0; c < channels; c++) row[c] = add ? row[c] + r[i][c] : r[i][c];
            }
        }
    }
}

static inline __attribute__((always_inline)) void products_body(const float *v, const float *packed, long tiles,
                                                                long in, long out, long p0, long p1, float *m) {
    const long groups = (out + GROUP - 1) / GROUP;
    float vt[CHUNK * BLOCK_TILES] __attribute__((aligned(64)));
    for (long p = p0; p < p1; p++) {
        const float *vp = v + p * tiles * in;
        float *mp = m + p * tiles * out;
        const float *up = packed + p * groups * in * GROUP;
        for (long t0 = 0; t0 < tiles; t0 += BLOCK_TILES) {
            const long nt = tiles - t0 < BLOCK_TILES ? tiles - t0 : BLOCK_TILES;
            for (long k0 = 0; k0 < in; k0 += CHUNK) {
                const long kn = in - k0 < CHUNK ? in - k0 : CHUNK;
                transpose_tiles(vp + t0 * in + k0, in, nt, kn, vt);
                for (long g = 0; g < groups; g++) {
                    v8 acc[GROUP][2];
                    const float *u = up + (g * in + k0) * GROUP;
                    if (nt > 8) group_block(2, vt, u, kn, acc);
                    else group_block(1, vt, u, kn, acc);
                    const long channels = out - g * GROUP < GROUP ? out - g * GROUP : GROUP;
                    store_group(acc, nt, channels, k0 > 0, mp + t0 * out + g * GROUP, out);
                }
            }
        }
    }
}

// U = G g G^T for the input channels [c0, c1) of a [out][in][3][3] weight, 8 output channels per
// vector. F(4x4): G (6x3) rows (1/4, 0, 0), -(1, 1, 1)/6, -(1, -1, 1)/6, (1/24, 1/12, 1/6),
// (1/24, -1/12, 1/6), (0, 0, 1); F(2x2): G (4x3) rows (1, 0, 0), (1, 1, 1)/2, (1, -1, 1)/2,
// (0, 0, 1).
static inline __attribute__((always_inline)) void g6(v8 a, v8 b, v8 c, v8 o[6]) {
    const v8 quarter = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    const v8 sixth = {1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6};
    const v8 twelfth = sixth * 0.5f, twentyfourth = sixth * 0.25f;
    const v8 p = a * twentyfourth + c * sixth, q = b * twelfth;
    o[0] = a * quarter;
    o[1] = -(a + b + c) * sixth;
    o[2] = -(a - b + c) * sixth;
    o[3] = p + q;
    o[4] = p - q;
    o[5] = c;
}

static inline __attribute__((always_inline)) void g4(v8 a, v8 b, v8 c, v8 o[4]) {
    const v8 half = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    o[0] = a;
    o[1] = (a + b + c) * half;
    o[2] = (a - b + c) * half;
    o[3] = c;
}

static inline __attribute__((always_inline)) void g(int T, v8 a, v8 b, v8 c, v8 *o) {
    if (T == 4) g6(a, b, c, o); else g4(a, b, c, o);
}

// o[xi] = (G g G^T)[xi] of input channel c for the 8 output channels [k, k + 8).
static inline __attribute__((always_inline)) void weights_vector(const int T, const float *w, long in, long c, long k,
                                                                 v8 o[36]) {
    const int N = T + 2;
    v8 f[9];
    for (int j = 0; j < 9; j++)
        for (int l = 0; l < 8; l++) f[j][l] = w[((k + l) * in + c) * 9 + j];
    v8 t[6][3];  // G f
    for (int col = 0; col < 3; col++) {
        v8 r[6];
        g(T, f[col], f[3 + col], f[6 + col], r);
        for (int i = 0; i < N; i++) t[i][col] = r[i];
    }
    for (int i = 0; i < N; i++) g(T, t[i][0], t[i][1], t[i][2], o + i * N);  // (G f) G^T
}

// panels == 0: U is [(T+2)^2][in][out]; else [(T+2)^2][out / 6 rounded up][in][6] (the products
// kernel's), written 24 output channels (3 vectors, 4 groups) at a time.
static inline __attribute__((always_inline)) void weights_body(const int T, const float *w, long out, long in,
                                                               long c0, long c1, int panels, float *u) {
    const int P = (T + 2) * (T + 2);
    const long groups = (out + GROUP - 1) / GROUP;
    if (!panels) {
        for (long c = c0; c < c1; c++) {
            for (long k = 0; k < out; k += 8) {
                v8 o[36];
                weights_vector(T, w, in, c, k, o);
                for (int xi = 0; xi < P; xi++) store8(u + (xi * in + c) * out + k, o[xi]);
            }
        }
        return;
    }
    // Input channels innermost: each of the P x 4 groups written is one sequential stream (with
    // the input channels outermost, the stores of each touched P x out / 6 pages).
    for (long k0 = 0; k0 < out; k0 += 24) {
        for (long c = c0; c < c1; c++) {
            float block[36][24];
            for (long k = k0; k < k0 + 24 && k < out; k += 8) {
                v8 o[36];
                weights_vector(T, w, in, c, k, o);
                for (int xi = 0; xi < P; xi++) store8(block[xi] + (k - k0), o[xi]);
            }
            for (int xi = 0; xi < P; xi++) {
                for (long k = k0; k < k0 + 24 && k < out; k += GROUP) {
                    float *dst = u + ((xi * groups + k / GROUP) * in + c) * GROUP;
                    if (out - k >= GROUP) memcpy(dst, block[xi] + (k - k0), GROUP * sizeof(float));
                    else for (long l = 0; l < out - k; l++) dst[l] = block[xi][k - k0 + l];
                }
            }
        }
    }
}

// The arguments of each public function; the per-ISA variants take them with a range
// [begin, end) of the function's work (tiles, input channels or points).
typedef struct {
    long tile;
    const float *weight;
    long out, in;
    int panels;
    float *u;
} weights_args;

typedef struct {
    const float *v, *packed;
    long tiles, in, out;
    float *m;
} products_args;

typedef struct {
    long tile;
    const float *src;
    lightcap_channel_layout layout;
    long height, width, channels, pad, tiles_w, tiles;
    float *v;
} input_args;

typedef struct {
    long tile;
    const float *m;
    long tiles, channels;
    const float *bias;
    int relu;
    float *dst;
    lightcap_channel_layout layout;
    long out_h, out_w, tiles_w;
} output_args;

// The bodies with the tile side as a constant, for one ISA (the caller's target attribute).
static inline __attribute__((always_inline)) void weights_isa(const weights_args *a, long begin, long end) {
    if (a->tile == 4) weights_body(4, a->weight, a->out, a->in, begin, end, a->panels, a->u);
    else weights_body(2, a->weight, a->out, a->in, begin, end, a->panels, a->u);
}

static inline __attribute__((always_inline)) void products_isa(const products_args *a, long begin, long end) {
    products_body(a->v, a->packed, a->tiles, a->in, a->out, begin, end, a->m);
}

static inline __attribute__((always_inline)) void input_isa(const input_args *a, long begin, long end) {
    if (a->tile == 4)
        input_body(4, a->src, a->layout, a->height, a->width, a->channels, a->pad, a->tiles_w, a->tiles, begin, end, a->v);
    else
        input_body(2, a->src, a->layout, a->height, a->width, a->channels, a->pad, a->tiles_w, a->tiles, begin, end, a->v);
}

static inline __attribute__((always_inline)) void output_isa(const output_args *a, long begin, long end) {
    if (a->tile == 4)
        output_body(4, a->m, a->tiles, a->channels, a->bias, a->relu, a->dst, a->layout, a->out_h, a->out_w, a->tiles_w,
                    begin, end);
    else
        output_body(2, a->m, a->tiles, a->channels, a->bias, a->relu, a->dst, a->layout, a->out_h, a->out_w, a->tiles_w,
                    begin, end);
}

AVX2_VARIANT(weights, weights_args, weights_isa)
AVX2_VARIANT(products, products_args, products_isa)
AVX2_VARIANT(input, input_args, input_isa)
AVX2_VARIANT(output, output_args, output_isa)
static void weights_generic(const weights_args *a, long b, long e) { weights_isa(a, b, e); }
static void products_generic(const products_args *a, long b, long e) { products_isa(a, b, e); }
static void input_generic(const input_args *a, long b, long e) { input_isa(a, b, e); }
static void output_generic(const output_args *a, long b, long e) { output_isa(a, b, e); }

// The bodies lightcap_kernel_parallel_for runs: the part [begin, end) of the work, on the CPU's
// vector path.
static void weights_part(const void *p, long b, long e) { BY_ISA(weights, p, b, e); }
static void products_part(const void *p, long b, long e) { BY_ISA(products, p, b, e); }
static void input_part(const void *p, long b, long e) { BY_ISA(input, p, b, e); }
static void output_part(const void *p, long b, long e) { BY_ISA(output, p, b, e); }

void lightcap_winograd_weights(long tile, const float *weight, long out_channels, long in_channels, int panels,
                               float *u, long threads) {
    weights_args a = {tile, weight, out_channels, in_channels, panels, u};
    lightcap_kernel_parallel_for(in_channels, threads, weights_part, &a);
}

long lightcap_winograd_panel_floats(long tile, long in_channels, long out_channels) {
    return (tile + 2) * (tile + 2) * ((out_channels + GROUP - 1) / GROUP) * in_channels * GROUP;
}

void lightcap_winograd_products(long tile, const float *v, const float *packed, long tiles, long in_channels,
                                long out_channels, float *m, long threads) {
    products_args a = {v, packed, tiles, in_channels, out_channels, m};
    lightcap_kernel_parallel_for((tile + 2) * (tile + 2), threads, products_part, &a);
}

void lightcap_winograd_input(long tile, const float *src, lightcap_channel_layout layout, long height, long width,
                             long channels, long pad, long tiles_w, long tiles, float *v, long threads) {
    input_args a = {tile, src, layout, height, width, channels, pad, tiles_w, tiles, v};
    lightcap_kernel_parallel_for(tiles, threads, input_part, &a);
}

void lightcap_winograd_output(long tile, const float *m, long tiles, long channels, const float *bias, int relu,
                              float *dst, lightcap_channel_layout layout, long out_h, long out_w,
                              long tiles_w, long threads) {
    output_args a = {tile, m, tiles, channels, bias, relu, dst, layout, out_h, out_w, tiles_w};
    lightcap_kernel_parallel_for(tiles, threads, output_part, &a);
}
