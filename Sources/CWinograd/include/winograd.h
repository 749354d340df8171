// Winograd F(4x4, 3x3) and F(2x2, 3x3) transforms for LightCap's own 3x3 convolution
// (WinogradConvolution.swift). oneDNN has Winograd kernels only for AVX-512; these transforms,
// with oneDNN's batched matmul for the 36 (or 16) products, give Winograd on every x86-64 CPU.
// Channels go 8 at a time. `tile` is the output tile side T, 4 or 2; input tiles are T + 2 wide.
#ifndef LIGHTCAP_WINOGRAD_H
#define LIGHTCAP_WINOGRAD_H

/// Where the 8 channels [8 * chunk, 8 * chunk + 8) of pixel `p` (= y * width + x) are:
/// base + (chunk / group) * outer + (chunk % group) * 8 + p * pixel floats.
/// nhwc: group = C / 8, outer = 0, pixel = C. nChw8c: group = 1, outer = H * W * 8, pixel = 8.
/// nChw16c: group = 2, outer = H * W * 16, pixel = 16.
typedef struct {
    long group, outer, pixel;
} lightcap_channel_layout;

/// Input transform V = B^T d B of the (T+2)x(T+2) input tiles [tile0, tile1) (row-major over a
/// tiles_w-wide grid of TxT output tiles; tile (ty, tx) reads rows T ty - pad ... T ty - pad + T + 1,
/// zeros outside the image). V is [(T+2)^2][tiles][channels]; channels % 8 == 0.
void lightcap_winograd_input(long tile, const float *src, lightcap_channel_layout layout, long height, long width,
                             long channels, long pad, long tiles_w, long tiles, long tile0, long tile1,
                             float *v);

/// Output transform Y = A^T M A of the tiles [tile0, tile1), plus bias (may be NULL), then ReLU
/// when `relu` != 0, written where inside the out_h x out_w output. M is [(T+2)^2][tiles][channels].
void lightcap_winograd_output(long tile, const float *m, long tiles, long channels, const float *bias, int relu,
                              float *dst, lightcap_channel_layout layout, long out_h, long out_w,
                              long tiles_w, long tile0, long tile1);

/// Floats of U packed for lightcap_winograd_products: points x ceil(out / 16) panels x in x 16.
long lightcap_winograd_packed_floats(long points, long in, long out);

/// Packs U [points][in][out] (row-major) into panels of 16 output channels, zero-padded.
void lightcap_winograd_pack(const float *u, long points, long in, long out, float *packed);

/// The products M[p] = V[p] U[p] for the points [p0, p1): V [points][tiles][in], M
/// [points][tiles][out], U packed by lightcap_winograd_pack; out % 8 == 0. Made for few tiles
/// (a general GEMM repacks U on every call).
void lightcap_winograd_products(const float *v, const float *packed, long tiles, long in, long out, long p0, long p1,
                                float *m);

/// Name of the vector path the transforms use ("avx2+fma" or "generic").
const char *lightcap_winograd_isa(void);

#endif
