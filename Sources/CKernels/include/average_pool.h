// LightCap's average pool (window = stride = k, no padding: CLIP ResNet's anti-aliasing pools),
// on the layouts oneDNN's convolutions give and take. oneDNN 2.6's AVX2 pooling on nChw8c ran
// RN50's seven 2x2 pools in 1.2 ms of the trunk (the input at 11-14 GB/s); this loop, one
// 8-channel vector per tap, is memory-bound.
#ifndef LIGHTCAP_AVERAGE_POOL_H
#define LIGHTCAP_AVERAGE_POOL_H

#include "channel_layout.h"

/// dst = AvgPool2d(kernel)(src) as PyTorch computes it (the k x k taps summed row by row, then
/// divided by k * k): channels (a multiple of 8) x height x width `src` in `src_layout` into
/// channels x (height / kernel) x (width / kernel) `dst` in `dst_layout` (which must not
/// overlap src). The channel chunks and output rows are split over `threads` threads of an
/// OpenMP team (the calling thread alone when threads <= 1).
void lightcap_average_pool(const float *src, lightcap_channel_layout src_layout, long channels, long height,
                           long width, long kernel, float *dst, lightcap_channel_layout dst_layout, long threads);

#endif
