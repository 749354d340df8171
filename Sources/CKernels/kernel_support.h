// What the kernels share (private to CKernels): 8- and 16-float vectors, the layout addressing, the
// choice of vector path and the split of work over OpenMP's threads.
#ifndef LIGHTCAP_KERNEL_SUPPORT_H
#define LIGHTCAP_KERNEL_SUPPORT_H

#include "channel_layout.h"
#include <string.h>

// The vector helpers are always inlined into the per-ISA functions, so their ABI never shows.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef float v2 __attribute__((vector_size(8)));

static inline __attribute__((always_inline)) v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) v8 splat8(float s) { return (v8){s, s, s, s, s, s, s, s}; }

static inline __attribute__((always_inline)) v16 splat16(float s) {
    return (v16){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
}

// Offset of channel chunk `chunk` (8 channels) of pixel 0 in layout `l`.
static inline __attribute__((always_inline)) long chunk_offset(lightcap_channel_layout l, long chunk) {
    return (chunk / l.group) * l.outer + (chunk % l.group) * 8;
}

static inline __attribute__((always_inline)) const float *chunk_at(const float *base, lightcap_channel_layout l,
                                                                    long chunk, long pixel) {
    return base + chunk_offset(l, chunk) + pixel * l.pixel;
}

// Whether to take the AVX2+FMA path: the CPU has both and LIGHTCAP_KERNEL_ISA does not say
// "generic". Decided once.
int lightcap_kernel_has_avx2(void);

// Whether kernels with an AVX-512 body (the INT8 linear layer) take it: AVX2 is taken, the CPU
// has AVX-512 F, BW and VL, and LIGHTCAP_KERNEL_ISA does not say "avx2". Decided once.
int lightcap_kernel_has_avx512(void);

// body(args, begin, end) over contiguous parts of [0, count), one per thread of an OpenMP team
// of min(threads, count) (fewer if OpenMP gives fewer, e.g. inside another parallel region);
// on the calling thread alone when threads <= 1 or libgomp is not in the process.
void lightcap_kernel_parallel_for(long count, long threads, void (*body)(const void *, long, long), const void *args);

// Each kernel's body is compiled twice, for AVX2+FMA and for baseline x86-64:
// BY_ISA(name, args, begin, end) calls name##_avx2 or name##_generic.
#if defined(__x86_64__)
#define BY_ISA(name, p, b, e) (lightcap_kernel_has_avx2() ? name##_avx2(p, b, e) : name##_generic(p, b, e))
#define AVX2_VARIANT(name, type, body) \
    __attribute__((target("avx2,fma"))) static void name##_avx2(const type *a, long b, long e) { body(a, b, e); }
#else
#define BY_ISA(name, p, b, e) name##_generic(p, b, e)
#define AVX2_VARIANT(name, type, body)
#endif

#endif
