// FP32 peak probe: independent FMA accumulator chains (16 with AVX-512, 12 with AVX2; enough
// to cover FMA latency x throughput on current x86 cores). Compiled per ISA with target
// attributes, chosen at run time.
#include "peak_flops.h"

// Opaque to the optimiser: the loops must really run.
static volatile float multiplier = 0.9999999f, addend = 1e-7f;

#if defined(__x86_64__)
#include <immintrin.h>

#define CHAINS 16

__attribute__((target("avx512f")))
static double loop_avx512(long iterations, float *sink) {
    __m512 acc[CHAINS];
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_set1_ps(1.0f + 0.001f * (float)j);
    const __m512 m = _mm512_set1_ps(multiplier), c = _mm512_set1_ps(addend);
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < CHAINS; j++) {
            acc[j] = _mm512_fmadd_ps(acc[j], m, c);
            __asm__ volatile("" : "+v"(acc[j]));
        }
    }
    __m512 s = acc[0];
    for (int j = 1; j < CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)iterations * CHAINS * 16 * 2;
}

// AVX2 has 16 vector registers: 16 chains plus the two constants spill to the stack, which
// halved the measured peak (52 against 100 GFLOPS on an AVX2 EPYC). 12 chains cover FMA
// latency x throughput (4-5 cycles x 2 pipes) on current cores and stay in registers.
#define CHAINS_AVX2 12

__attribute__((target("avx2,fma")))
static double loop_avx2(long iterations, float *sink) {
    __m256 acc[CHAINS_AVX2];
    for (int j = 0; j < CHAINS_AVX2; j++) acc[j] = _mm256_set1_ps(1.0f + 0.001f * (float)j);
    const __m256 m = _mm256_set1_ps(multiplier), c = _mm256_set1_ps(addend);
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < CHAINS_AVX2; j++) {
            acc[j] = _mm256_fmadd_ps(acc[j], m, c);
            __asm__ volatile("" : "+v"(acc[j]));
        }
    }
    __m256 s = acc[0];
    for (int j = 1; j < CHAINS_AVX2; j++) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink = out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
    return (double)iterations * CHAINS_AVX2 * 8 * 2;
}
#endif

static double loop_scalar(long iterations, float *sink) {
    float acc[8];
    for (int j = 0; j < 8; j++) acc[j] = 1.0f + 0.001f * (float)j;
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < 8; j++) {
            acc[j] = acc[j] * multiplier + addend;
            __asm__ volatile("" : "+x"(acc[j]));
        }
    }
    float s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    *sink = s;
    return (double)iterations * 8 * 2;
}

const char *lightcap_fma_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512f";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
#endif
    return "scalar";
}

double lightcap_fma_loop(long iterations, float *sink) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return loop_avx512(iterations, sink);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return loop_avx2(iterations, sink);
#endif
    return loop_scalar(iterations, sink);
}
