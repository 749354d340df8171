// Int8ConvolutionBenchmark (`lightcap bench int8-convolutions`): every convolution of the CLIP
// RN50 trunk at 224 px, run alone by oneDNN in F32 (direct, bias + ReLU, the kernels the exact
// path picks from) and in INT8 (u8 source, s8 weights, per-channel output scales, bias + ReLU,
// u8 output), median thread CPU milliseconds of each, on this CPU. The measurement that comes
// before an INT8 trunk: how much faster oneDNN's u8s8 kernels are here (VNNI's `vpdpbusd` adds
// four u8 x s8 products a lane; without VNNI, AVX2's `vpmaddubsw` + `vpmaddwd` take about three
// instructions per 32). Layer by layer: reorders between layouts and the pools are left out.
// Wall clock on more than one thread (the work is on oneDNN's OpenMP threads then).

import LightCapCore
import LightCapModel

public enum Int8ConvolutionBenchmark {
    /// One convolution of the trunk.
    public struct Row: Codable, Sendable {
        public let name: String
        /// "64x64 3x3 @56" (in x out, kernel, input side), stride > 1 noted.
        public let shape: String
        /// Multiply-adds x 2.
        public let flops: Double
        public let f32Ms: Double, int8Ms: Double
        public let f32Kernel: String, int8Kernel: String
    }

    /// Runs each convolution of `configuration`'s trunk `runs` times after 2 warm-up runs, F32
    /// then INT8, on `threads` oneDNN threads.
    public static func run(configuration: Configuration = VisualBenchmark.baseConfiguration(), runs: Int = 20,
                           threads: Int = 1) throws -> [Row] {
        let layout = CLIPResNetLayout(configuration.visual)
        var items: [(CLIPResNetLayout.Convolution, Int)] = []  // (convolution, input side)
        var side = configuration.image.size
        for c in layout.stem {
            items.append((c, side))
            side = Conv2d.outputSize(side, kernel: c.kernel, stride: c.stride, padding: c.padding)
        }
        side /= 2  // the stem's average pool
        for block in layout.blocks {
            items.append((block.conv1, side))
            items.append((block.conv2, side))
            let pooled = side / block.stride
            items.append((block.conv3, pooled))
            if let d = block.downsample { items.append((d, pooled)) }
            side = pooled
        }
        return try Threads.with(threads) {
            try items.map { c, side in
                let out = Conv2d.outputSize(side, kernel: c.kernel, stride: c.stride, padding: c.padding)
                func time(_ int8: Bool) throws -> (Double, String) {
                    let probe = try ConvolutionProbe(inChannels: c.inChannels, height: side, width: side, outChannels: c.outChannels,
                                                     kernel: c.kernel, stride: c.stride, padding: c.padding, int8: int8)
                    for _ in 0..<2 { try probe.run() }
                    return (try Statistics.medianTime(runs, clock: threads == 1 ? Clock.threadCPUMs : Clock.wallMs) { try probe.run() },
                            probe.implementation)
                }
                let (f32, f32Kernel) = try time(false)
                let (int8, int8Kernel) = try time(true)
                let flops = 2.0 * Double(c.inChannels * c.outChannels * c.kernel * c.kernel * out * out)
                return Row(name: c.name, shape: "\(c.inChannels)x\(c.outChannels) \(c.kernel)x\(c.kernel) @\(side)"
                               + (c.stride > 1 ? " /\(c.stride)" : ""),
                           flops: flops, f32Ms: f32, int8Ms: int8, f32Kernel: f32Kernel, int8Kernel: int8Kernel)
            }
        }
    }
}
