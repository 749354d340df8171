// LightCap's few-query attention (attention.h): per head, 8 lanes at a time over the head's
// columns (a 26-wide head is 3 vectors and 2 single values), the softmax with libm's expf as
// `Activations.softmax` computes it. Compiled for AVX2+FMA and baseline x86-64
// (kernel_support.h); DenseKernelTests compares it with `Reference.attention` on both.
#include "attention.h"
#include "kernel_support.h"

#include <math.h>

typedef struct {
    const float *query, *key, *value, *mask;
    long qs, ks, vs, os, tq, tk, head_dim;
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
            for (long j = 0; j < tk; j++) row[j] = a->scale * dot(q, a->key + j * a->ks + off, hd);
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
            for (long j = 0; j < tk; j++)
                if (row[j] != 0) add_scaled(out, row[j], a->value + j * a->vs + off, hd);
        }
    }
}

AVX2_VARIANT(attention, attention_args, attention_isa)
static void attention_generic(const attention_args *a, long b, long e) { attention_isa(a, b, e); }

void lightcap_attention_few(const float *query, long qs, const float *key, long ks, const float *value, long vs, long tq,
                            long tk, long heads, long head_dim, float scale, const float *mask, float *scratch,
                            float *output, long os) {
    attention_args a = {query, key, value, mask, qs, ks, vs, os, tq, tk, head_dim, scale, scratch, output};
    BY_ISA(attention, &a, 0, heads);
}
