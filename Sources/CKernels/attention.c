// LightCap's few-query attention (attention.h): per head, 8 lanes at a time over the head's
// columns (a 26-wide head is 3 vectors and 2 single values), the dot products of 8 keys reduced
// across lanes together, the softmax with libm's expf as `Activations.softmax` computes it.
// Compiled for AVX2+FMA and baseline x86-64 (kernel_support.h); DenseKernelTests compares it
// with `Reference.attention` on both.
#include "attention.h"
#include "kernel_support.h"

#include <math.h>
#include <stddef.h>

typedef struct {
    const float *query, *key, *value, *key2, *value2, *mask;
    long qs, ks, vs, os, tq, tk, tk1, head_dim;
    float scale;
    float *scratch, *output;
} attention_args;

static inline __attribute__((always_inline)) float dot(const float *a, const float *b, long n) {
    v8 acc = splat8(0.0f);
    long i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
    float lanes[8];
    store8(lanes, acc);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// (a + b) lanes in pairs, as x86's horizontal add: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7].
static inline __attribute__((always_inline)) v8 pair_sums(v8 a, v8 b) {
    return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// Lane t: the sum of the 8 lanes of a[t].
static inline __attribute__((always_inline)) v8 lane_sums(const v8 *a) {
    const v8 low = pair_sums(pair_sums(a[0], a[1]), pair_sums(a[2], a[3]));   // sums of lanes 0-3, then 4-7, of a[0..3]
    const v8 high = pair_sums(pair_sums(a[4], a[5]), pair_sums(a[6], a[7]));  // the same of a[4..7]
    return __builtin_shufflevector(low, high, 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(low, high, 4, 5, 6, 7, 12, 13, 14, 15);
}

// row[j] = scale * (q . k_j) for tk keys (rows `ks` apart) of n values: 8 keys at a time, each
// key's 8-lane products summed across lanes together (one reduction for 8 dot products).
static inline __attribute__((always_inline)) void scores(const float *q, const float *key, long ks, long tk, long n,
                                                         float scale, float *row) {
    const long full = n / 8 * 8;
    long j = 0;
    for (; j + 8 <= tk; j += 8) {
        v8 acc[8];
        for (long t = 0; t < 8; t++) acc[t] = splat8(0.0f);
        for (long c = 0; c < full; c += 8) {
            const v8 qv = load8(q + c);
            for (long t = 0; t < 8; t++) acc[t] += qv * load8(key + (j + t) * ks + c);
        }
        float sums[8];
        store8(sums, lane_sums(acc));
        for (long t = 0; t < 8; t++) {
            float sum = sums[t];
            for (long c = full; c < n; c++) sum += q[c] * key[(j + t) * ks + c];
            row[j + t] = scale * sum;
        }
    }
    for (; j < tk; j++) row[j] = scale * dot(q, key + j * ks, n);
}

// y += w x over n values.
static inline __attribute__((always_inline)) void add_scaled(float *y, float w, const float *x, long n) {
    const v8 lanes = splat8(w);
    long i = 0;
    for (; i + 8 <= n; i += 8) store8(y + i, load8(y + i) + lanes * load8(x + i));
    for (; i < n; i++) y[i] += w * x[i];
}

static inline __attribute__((always_inline)) void attention_isa(const attention_args *a, long h0, long h1) {
    const long tq = a->tq, tk = a->tk, hd = a->head_dim;
    for (long h = h0; h < h1; h++) {
        const long off = h * hd;
        for (long i = 0; i < tq; i++) {
            const float *q = a->query + i * a->qs + off;
            float *row = a->scratch + i * tk;
            scores(q, a->key + off, a->ks, a->tk1, hd, a->scale, row);
            if (tk > a->tk1) scores(q, a->key2 + off, a->ks, tk - a->tk1, hd, a->scale, row + a->tk1);
            if (a->mask)
                for (long j = 0; j < tk; j++) row[j] += a->mask[i * tk + j];
            float m = -INFINITY;
            for (long j = 0; j < tk; j++) m = row[j] > m ? row[j] : m;
            if (m == -INFINITY) {
                for (long j = 0; j < tk; j++) row[j] = 0;
            } else {
                float sum = 0;
                for (long j = 0; j < tk; j++) {
                    row[j] = expf(row[j] - m);
                    sum += row[j];
                }
                const float inv = 1 / sum;
                for (long j = 0; j < tk; j++) row[j] *= inv;
            }
            float *out = a->output + i * a->os + off;
            for (long c = 0; c < hd; c++) out[c] = 0;
            for (long j = 0; j < a->tk1; j++)
                if (row[j] != 0) add_scaled(out, row[j], a->value + j * a->vs + off, hd);
            for (long j = a->tk1; j < tk; j++)
                if (row[j] != 0) add_scaled(out, row[j], a->value2 + (j - a->tk1) * a->vs + off, hd);
        }
    }
}

AVX2_VARIANT(attention, attention_args, attention_isa)
static void attention_generic(const attention_args *a, long b, long e) { attention_isa(a, b, e); }

void lightcap_attention_few(const float *query, long qs, const float *key, long ks, const float *value, long vs, long tq,
                            long tk, long heads, long head_dim, float scale, const float *mask, float *scratch,
                            float *output, long os) {
    lightcap_attention_few_split(query, qs, key, value, tk, NULL, NULL, 0, ks, vs, tq, heads, head_dim, scale, mask,
                                 scratch, output, os);
}

void lightcap_attention_few_split(const float *query, long qs, const float *key, const float *value, long tk1,
                                  const float *key2, const float *value2, long tk2, long ks, long vs, long tq,
                                  long heads, long head_dim, float scale, const float *mask, float *scratch,
                                  float *output, long os) {
    attention_args a = {query, key, value, key2, value2, mask, qs, ks, vs, os, tq, tk1 + tk2, tk1, head_dim, scale, scratch, output};
    BY_ISA(attention, &a, 0, heads);
}
