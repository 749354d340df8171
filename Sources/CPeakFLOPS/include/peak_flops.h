// A tiny FMA loop that measures this core's FP32 peak (benchmarks only).
#ifndef LIGHTCAP_PEAK_FLOPS_H
#define LIGHTCAP_PEAK_FLOPS_H

/// Runs independent FMA chains for `iterations` rounds on the calling thread, with the widest
/// vector unit the CPU has (AVX-512, else AVX2+FMA, else scalar). Returns the FLOPs done
/// (2 per multiply-add); `*sink` receives a value that depends on every result.
double lightcap_fma_loop(long iterations, float *sink);

/// Name of the vector path `lightcap_fma_loop` uses ("avx512f", "avx2+fma", "scalar").
const char *lightcap_fma_isa(void);

#endif
