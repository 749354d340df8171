// ConvolutionPolicy: which kinds of kernels a ConvolutionNetwork may use for its convolutions
// and average pools. The kernel of each layer under each policy is KernelChoice's table.

/// Which kernels compute a network's convolutions and pools (per layer: `KernelChoice`). "Direct"
/// is the direct convolution method (oneDNN's direct algorithm, LightCap's `DirectConvolution`),
/// exact up to summation order; Winograd's method is slightly less exact (its transforms scale
/// values by up to ~100) and faster on large layers.
public enum ConvolutionPolicy: String, Sendable, CaseIterable {
    /// Direct convolution everywhere: LightCap's direct kernel (`DirectConvolution`) where it
    /// beats oneDNN's AVX2 kernels (stride 1: 3x3 with >= 128 output channels, 1x1 at output
    /// sides up to 7), oneDNN's direct kernels elsewhere; LightCap's average pools. The default.
    case exact
    /// oneDNN's direct convolution and average pools everywhere, for comparisons (every other
    /// policy pools with LightCap's `AveragePool`).
    case oneDNN = "onednn"
    /// oneDNN's Winograd for the 3x3 stride-1 convolutions where it is faster (output side >= 14,
    /// >= 64 output channels); as `exact` elsewhere, and everywhere on CPUs without AVX-512
    /// (oneDNN has Winograd kernels only for AVX-512). Slower to load.
    case oneDNNWinograd = "onednn-winograd"
    /// oneDNN chooses the algorithm of each convolution; as `exact` where it takes its direct one.
    case oneDNNAuto = "onednn-auto"
    /// LightCap's Winograd (`WinogradConvolution`), on any x86-64 CPU, for the 3x3 stride-1
    /// convolutions without a residual: F(4x4, 3x3) at output sides >= 12, F(2x2, 3x3) at 6 to
    /// 11; as `exact` elsewhere.
    case lightcapWinograd = "lightcap-winograd"
}
