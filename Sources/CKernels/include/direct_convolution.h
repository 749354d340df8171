// LightCap's direct convolution (oneDNN 2.6's AVX2 kernel blocks 3 pixels of one output row,
// so a row ends in a block of 1 or 2 pixels with too few accumulators to hide the FMA latency:
// RN50's 7x7 layers ran at 55-80% of the peak): register blocks of up to 6 output pixels x 16
// output channels over the whole output, pixels taken across row ends. Any kernel side up to
// 7, stride and padding. Exact up to summation order, like oneDNN's.
#ifndef LIGHTCAP_DIRECT_CONVOLUTION_H
#define LIGHTCAP_DIRECT_CONVOLUTION_H

#include "channel_layout.h"

/// Floats of the packed weights: [out / 16][in / 8][k][k][8][16] (out % 16 == 0, in % 8 == 0).
long lightcap_direct_weight_floats(long out_channels, long in_channels, long kernel);

/// Packs a [out][in][k][k] weight (PyTorch's OIHW) for `lightcap_direct_convolution`, the
/// output channel panels split over `threads` threads.
void lightcap_direct_weights(const float *weight, long out_channels, long in_channels, long kernel, float *packed,
                             long threads);

/// Floats of the zero-padded copy of the input the convolution makes in `scratch`.
long lightcap_direct_scratch_floats(long in_channels, long height, long width, long pad);

/// dst = conv(src) + bias (may be NULL) (+ dst itself when `accumulate` != 0: a residual
/// already there), then ReLU when `relu` != 0: a k x k convolution with
/// `stride` and zero padding `pad` of the in_channels x height x width `src` into the
/// out_channels x out_h x out_w `dst` (out_h = (height + 2 pad - k) / stride + 1, likewise
/// out_w), each in its layout. `scratch` holds lightcap_direct_scratch_floats floats; it must
/// not overlap src or dst, nor dst src. The output channels are split over `threads` threads
/// of an OpenMP team (the calling thread alone when threads <= 1).
void lightcap_direct_convolution(const float *src, lightcap_channel_layout src_layout, long in_channels, long height,
                                 long width, long kernel, long stride, long pad, const float *packed,
                                 const float *bias, int relu, int accumulate, long out_channels, float *dst,
                                 lightcap_channel_layout dst_layout, long out_h, long out_w, float *scratch,
                                 long threads);

#endif
