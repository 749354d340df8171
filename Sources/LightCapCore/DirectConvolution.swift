// DirectConvolution: LightCap's own direct convolution (CKernels' direct_convolution.c), exact
// up to summation order like oneDNN's. oneDNN 2.6's AVX2 direct kernel (jit:avx2) blocks 3
// pixels of one output row x 32 channels (ur_w = 3), so a row ends in a block of 1 or 2 pixels
// with too few accumulators to hide the FMA latency (RN50's 7x7 3x3 layers ran at 55-80% of the
// FMA peak, its 14x14 ones at 90%). This kernel takes blocks of up to 6 output pixels x 16
// output channels across row ends (49 pixels: 4 blocks of 6 and 5 of 5, so 10-12 accumulators
// in every block). Bias, ReLU and a residual already in the destination are fused. Weights are
// packed once, at load.

import CKernels

/// One convolution (+ bias, + ReLU) by LightCap's direct kernel.
final class DirectConvolution: @unchecked Sendable {
    let inChannels: Int, outChannels: Int
    let kernel: Int, stride: Int, padding: Int
    let height: Int, width: Int
    let outHeight: Int, outWidth: Int
    let relu: Bool
    /// Whether the output adds the value already in the destination (a residual).
    let residual: Bool
    let srcLayout: ChannelLayout, dstLayout: ChannelLayout
    /// [out / 16, in / 8, k, k, 8, 16].
    let weights: DNNL.Buffer
    /// [out], nil when the convolution has none.
    let bias: DNNL.Buffer?

    /// Floats of the zero-padded input copy `run` makes in its scratch buffer.
    var scratchCount: Int { lightcap_direct_scratch_floats(inChannels, height, width, padding) }

    /// Whether the kernel can compute `conv`: input channels in multiples of 8, output channels
    /// in multiples of 16, kernel side at most 7. (Where a network takes it: `KernelChoice`.)
    static func supports(_ conv: Conv2d) -> Bool {
        conv.kernel <= 7 && conv.inChannels % 8 == 0 && conv.outChannels % 16 == 0
    }

    /// `residual`: the output adds what the destination holds when `run` starts (then ReLU).
    /// `threads` split the packing of the weights.
    init(_ conv: Conv2d, height: Int, width: Int, relu: Bool, residual: Bool = false, srcLayout: ChannelLayout,
         dstLayout: ChannelLayout, threads: Int = 1) throws {
        guard Self.supports(conv) else {
            throw LightCapError.invalidArgument(reason: "direct kernel: needs input channels in multiples of 8, output channels in multiples of 16 and a kernel of at most 7x7, got \(conv.weight.shape)")
        }
        try ChannelLayout.check(srcLayout, dstLayout, fit: conv, for: "direct kernel")
        inChannels = conv.inChannels
        outChannels = conv.outChannels
        kernel = conv.kernel
        stride = conv.stride
        padding = conv.padding
        self.height = height
        self.width = width
        outHeight = conv.outputSize(height)
        outWidth = conv.outputSize(width)
        guard outHeight > 0, outWidth > 0 else {
            throw LightCapError.invalidArgument(reason: "direct kernel: input \(height)x\(width) too small")
        }
        self.relu = relu
        self.residual = residual
        self.srcLayout = srcLayout
        self.dstLayout = dstLayout
        let (o, i, k) = (conv.outChannels, conv.inChannels, conv.kernel)
        let packed = DNNL.Buffer(bytes: lightcap_direct_weight_floats(o, i, k) * MemoryLayout<Float>.size)
        conv.weight.withUnsafeBufferPointer {
            lightcap_direct_weights($0.baseAddress!, o, i, k, packed.pointer.assumingMemoryBound(to: Float.self), threads)
        }
        weights = packed
        bias = conv.bias.map(DNNL.Buffer.init(copying:))
    }

    /// Runs the convolution: src (srcLayout) -> dst (dstLayout), adding dst's values first with
    /// `residual`; `scratch` holds `scratchCount` floats and overlaps neither. The output
    /// channels are split over `threads` threads of the OpenMP team oneDNN runs on.
    func run(src: UnsafePointer<Float>, dst: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, threads: Int) {
        let inLayout = srcLayout.addressing(channels: inChannels, height: height, width: width)
        let outLayout = dstLayout.addressing(channels: outChannels, height: outHeight, width: outWidth)
        let b = bias.map { UnsafePointer($0.pointer.assumingMemoryBound(to: Float.self)) }
        lightcap_direct_convolution(src, inLayout, inChannels, height, width, kernel, stride, padding,
                                    weights.pointer.assumingMemoryBound(to: Float.self), b, relu ? 1 : 0, residual ? 1 : 0,
                                    outChannels, dst, outLayout, outHeight, outWidth, scratch, threads)
    }

    /// Its name in profiles.
    var implementation: String { "lightcap_direct:\(LightCapKernels.isa)" }
}
