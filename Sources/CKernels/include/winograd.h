// Winograd F(4x4, 3x3) and F(2x2, 3x3) for LightCap's own 3x3 convolution
// (WinogradConvolution.swift): transforms, and a products kernel for few tiles. oneDNN has
// Winograd kernels only for AVX-512; these, with oneDNN's batched matmul for the products of
// many tiles, give Winograd on every x86-64 CPU. Channels go 8 at a time.
#ifndef LIGHTCAP_WINOGRAD_H
#define LIGHTCAP_WINOGRAD_H

#include "channel_layout.h"

/// `tile` is the output tile side T: 4 for F(4x4, 3x3), 2 for F(2x2, 3x3); a tile reads a
/// (T+2)x(T+2) input tile and has P = (T+2)^2 transform points (36 or 16). Each function splits
/// its work over `threads` threads of an OpenMP team (libgomp's, the one oneDNN's kernels run
/// on), or runs it on the calling thread when threads <= 1.

/// Weight transform U = G g G^T of a [out][in][3][3] weight g, in float; out_channels % 8 == 0.
/// panels == 0: U is [P][in][out] (oneDNN's plain matmul weights); else U is packed for
/// `lightcap_winograd_products`, in lightcap_winograd_panel_floats(tile, in, out) zeroed floats.
void lightcap_winograd_weights(long tile, const float *weight, long out_channels, long in_channels, int panels,
                               float *u, long threads);

/// Floats of U packed in panels of 6 output channels: [P][out / 6 rounded up][in][6].
long lightcap_winograd_panel_floats(long tile, long in_channels, long out_channels);

/// The P products M[xi] = V[xi] U[xi] ([tiles, in] x [in, out]) with U packed in panels: for
/// few tiles, where a general matmul repacking U on every call is slow (U is read once per 16
/// tiles). V is [P][tiles][in], M [P][tiles][out]; the points are split over the threads.
void lightcap_winograd_products(long tile, const float *v, const float *packed, long tiles, long in_channels,
                                long out_channels, float *m, long threads);

/// Input transform V = B^T d B of the input tiles (row-major over a tiles_w-wide grid of TxT
/// output tiles; tile (ty, tx) reads rows T ty - pad ... T ty - pad + T + 1, zeros outside the
/// image). V is [P][tiles][channels]; channels % 8 == 0.
void lightcap_winograd_input(long tile, const float *src, lightcap_channel_layout layout, long height, long width,
                             long channels, long pad, long tiles_w, long tiles, float *v, long threads);

/// Output transform Y = A^T M A of the tiles, plus bias (may be NULL), then ReLU when
/// `relu` != 0, written where inside the out_h x out_w output. M is [P][tiles][channels].
void lightcap_winograd_output(long tile, const float *m, long tiles, long channels, const float *bias, int relu,
                              float *dst, lightcap_channel_layout layout, long out_h, long out_w,
                              long tiles_w, long threads);

#endif
