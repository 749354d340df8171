// How LightCap's C kernels address the channels of an activation (batch 1), in any of the
// layouts oneDNN's convolutions give and take, so that they read and write those directly.
#ifndef LIGHTCAP_CHANNEL_LAYOUT_H
#define LIGHTCAP_CHANNEL_LAYOUT_H

/// Where the 8 channels [8 * chunk, 8 * chunk + 8) of pixel `p` (= y * width + x) are:
/// base + (chunk / group) * outer + (chunk % group) * 8 + p * pixel floats.
/// nhwc: group = C / 8, outer = 0, pixel = C. nChw8c: group = 1, outer = H * W * 8, pixel = 8.
/// nChw16c: group = 2, outer = H * W * 16, pixel = 16.
typedef struct {
    long group, outer, pixel;
} lightcap_channel_layout;

/// Name of the vector path the kernels take ("avx2+fma", or "generic": baseline x86-64, also
/// when LIGHTCAP_KERNEL_ISA=generic caps it, as DNNL_MAX_CPU_ISA caps oneDNN).
const char *lightcap_kernel_isa(void);

/// Whether the kernels' threads come from libgomp (the OpenMP runtime oneDNN loads), rather
/// than only the calling thread.
int lightcap_kernel_uses_openmp(void);

#endif
