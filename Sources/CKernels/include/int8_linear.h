// LightCap's weight-only INT8 fully connected layer, for the fusion layers of a decoding step:
// y[M, out] = x[M, in] (q * s)^T + b with q the INT8 levels of each weight row and s its scale,
// x and y in F32. At 2-10 rows per step the layer is bound by reading its weights (18 MB of F32
// per step at base size, about 1 ms at this class of host's 20 GB/s); INT8 weights are a
// quarter of the bytes, and the activations stay F32 (only the weights are rounded).
#ifndef LIGHTCAP_INT8_LINEAR_H
#define LIGHTCAP_INT8_LINEAR_H

#include <stdint.h>

/// Bytes of the packed levels of an [out, in] weight: panels of 16 output rows,
/// [ceil(out / 16)][in][16] (the rows past `out` of the last panel are zero).
long lightcap_int8_linear_packed_bytes(long out_features, long in_features);

/// Packs row-major levels q [out][in] into the panel layout above.
void lightcap_int8_linear_pack(const int8_t *levels, long out_features, long in_features, int8_t *packed);

/// y[r][n] = (sum over k of x[r][k] * q[n][k], in order of k, F32) * scales[n] + bias[n]
/// (bias may be NULL) for r < rows, n < out_features; x is [rows][in], y [rows][out], both
/// row-major. The panels are split over `threads` threads of an OpenMP team (the calling thread
/// alone when threads <= 1). Each row's result is the same whatever the other rows.
void lightcap_int8_linear(const float *x, long rows, long in_features, const int8_t *packed, const float *scales,
                          const float *bias, long out_features, float *y, long threads);

/// The vector path the layer takes here: "avx512", "avx2+fma" or "generic" (LIGHTCAP_KERNEL_ISA
/// = avx2 or generic caps it).
const char *lightcap_int8_linear_isa(void);

#endif
