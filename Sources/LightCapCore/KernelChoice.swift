// KernelChoice: the kernel of each layer of a ConvolutionNetwork under each ConvolutionPolicy,
// in one table. The builder (ConvolutionBuilder.swift) follows it and decides nothing itself.

/// Which kernel computes each layer of a `ConvolutionNetwork`.
///
/// For every convolution the builder first creates oneDNN's primitive (`oneDNNAlgorithms`): it
/// computes the layer unless one of LightCap's kernels (`convolution`, given the primitive's
/// implementation name) takes its place, reading and writing the layouts it would (so no
/// reorders go between them). Average pools: `averagePool`.
///
/// | policy | 3x3 stride-1 convolutions | other convolutions | average pools |
/// |---|---|---|---|
/// | `exact` | LightCap direct where faster (1), else oneDNN direct | the same | LightCap (3) |
/// | `oneDNN` | oneDNN direct | oneDNN direct | oneDNN |
/// | `oneDNNWinograd` | oneDNN Winograd at output sides >= 14 with >= 64 output channels (4), else as `exact` | as `exact` | LightCap (3) |
/// | `oneDNNAuto` | oneDNN's choice (auto); as `exact` where it takes its direct kernel | the same | LightCap (3) |
/// | `lightcapWinograd` | without a residual, LightCap Winograd (2): F(4x4, 3x3) at output sides >= 12, F(2x2, 3x3) at 6 to 11; else as `exact` | as `exact` | LightCap (3) |
///
/// The reasons, measured on the CLIP RN50 trunk (`lightcap-bench-visual --profile`):
/// 1. `lightcapDirectIsFaster` (against oneDNN's AVX2 direct kernels only); only where the
///    kernel can compute the layer (`DirectConvolution.supports`).
/// 2. `lightcapWinogradTile`; only where the kernel can compute the layer
///    (`WinogradConvolution.supports`) and oneDNN has a fast batched matmul for its products
///    (else as `exact`).
/// 3. Half oneDNN's AVX2 pooling time (`AveragePool`); not on the network's input (it has no
///    buffer of the engine's), and only in LightCap's layouts (`ChannelLayout`).
/// 4. `oneDNNWinogradIsFaster`; oneDNN has Winograd kernels only for AVX-512 (elsewhere as
///    `exact`).
enum KernelChoice {
    /// One of LightCap's kernels in place of oneDNN's convolution primitive.
    enum LightCapConvolution: Equatable {
        /// `WinogradConvolution`, F(tile x tile, 3x3), tile 4 or 2.
        case winograd(tile: Int)
        /// `DirectConvolution`.
        case direct
    }

    /// What computes an average pool.
    enum Pool: Equatable {
        case oneDNN
        /// `AveragePool`, input and output in `layout`.
        case lightcap(ChannelLayout)
    }

    /// The algorithms oneDNN's primitive for `conv` (output `output`) is created with, in
    /// order: the first oneDNN creates is taken, Winograd only where it has more than its
    /// reference loops (`ref:any`, far slower than the direct kernel).
    static func oneDNNAlgorithms(_ policy: ConvolutionPolicy, _ conv: Conv2d,
                                 output: ConvolutionNetwork.Shape) -> [DNNL.ConvolutionKind] {
        switch policy {
        case .exact, .oneDNN, .lightcapWinograd: return [.direct]
        case .oneDNNWinograd: return oneDNNWinogradIsFaster(conv, output: output) ? [.winograd, .direct] : [.direct]
        case .oneDNNAuto: return [.auto, .direct]
        }
    }

    /// LightCap's kernels to put in place of oneDNN's primitive for `conv` (implementation
    /// `oneDNN`), in order: LightCap's Winograd is passed over where it can't be built (no fast
    /// batched matmul here), any other entry is taken; with none, oneDNN's primitive computes
    /// the layer.
    static func convolution(_ policy: ConvolutionPolicy, _ conv: Conv2d, output: ConvolutionNetwork.Shape,
                            residual: Bool, oneDNN: String) -> [LightCapConvolution] {
        var kernels: [LightCapConvolution] = []
        if policy == .lightcapWinograd, !residual, WinogradConvolution.supports(conv), let tile = lightcapWinogradTile(output) {
            kernels.append(.winograd(tile: tile))
        }
        if policy != .oneDNN, DirectConvolution.supports(conv), lightcapDirectIsFaster(conv, output: output, oneDNN: oneDNN) {
            kernels.append(.direct)
        }
        return kernels
    }

    /// The kernel of an average pool whose input is in `layout` (nil: none of LightCap's).
    static func averagePool(_ policy: ConvolutionPolicy, readsNetworkInput: Bool, layout: ChannelLayout?) -> Pool {
        guard policy != .oneDNN, !readsNetworkInput, let layout else { return .oneDNN }
        return .lightcap(layout)
    }

    /// Where oneDNN's Winograd kernels beat its direct ones on avx512_core (measured per layer):
    /// 3x3 stride 1, output side >= 14, >= 64 output channels.
    static func oneDNNWinogradIsFaster(_ conv: Conv2d, output: ConvolutionNetwork.Shape) -> Bool {
        conv.kernel == 3 && conv.stride == 1 && output.height >= 14 && output.width >= 14 && conv.outChannels >= 64
    }

    /// Which of LightCap's Winograd convolutions beats oneDNN's direct kernel: F(4x4, 3x3) at
    /// output side >= 12, F(2x2, 3x3) at sides 6 to 11, none below. On AVX2, one thread, F(4x4)
    /// ran the 3x3 layers at sides 112 to 14 1.6-3.3x faster than direct, but at side 7 (4 tiles
    /// for 49 outputs, 37.7 MB of transformed weights read for them) no faster; F(2x2) at side 7
    /// has 16 tiles and 16.8 MB (products by the panel kernel).
    static func lightcapWinogradTile(_ output: ConvolutionNetwork.Shape) -> Int? {
        let side = min(output.height, output.width)
        return side >= 12 ? 4 : side >= 6 ? 2 : nil
    }

    /// Where LightCap's direct kernel beats oneDNN's direct kernel `oneDNN` (the implementation
    /// oneDNN chose), against oneDNN's AVX2 kernels only (not AVX-512's, twice as wide); a quiet
    /// AVX2 EPYC (docs/VISUAL.md):
    /// - 3x3 (`jit:avx2`), stride 1, at least 128 output channels (8 panels), any output side:
    ///   3-5% faster at sides 56 to 14, 16-35% at 7 (where oneDNN's 3-pixel blocks leave one
    ///   pixel). With 32 or 64 output channels (the stem, layer1) there are 2 or 4 panels to
    ///   split over the threads, each rereading the whole input: tied on one thread, 1-6% slower
    ///   on two.
    /// - 1x1 (`jit_1x1:avx2`), stride 1, output sides up to 7 (each panel rereads the input:
    ///   at 14 to 56 1.05-1.46x oneDNN's time).
    static func lightcapDirectIsFaster(_ conv: Conv2d, output: ConvolutionNetwork.Shape, oneDNN: String) -> Bool {
        guard LightCapKernels.isa == "avx2+fma", conv.stride == 1 else { return false }
        if conv.kernel == 3 && oneDNN == "jit:avx2" { return conv.outChannels >= 128 }
        if conv.kernel == 1 && oneDNN == "jit_1x1:avx2" { return max(output.height, output.width) <= 7 }
        return false
    }
}
