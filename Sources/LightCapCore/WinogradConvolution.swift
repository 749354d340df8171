// WinogradConvolution: LightCap's own Winograd F(4x4, 3x3) and F(2x2, 3x3) for 3x3 stride-1
// convolutions, on every x86-64 CPU (oneDNN 2.6 has Winograd kernels only for AVX-512). Each
// TxT output tile comes from a (T+2)x(T+2) input tile: V = B^T d B (CKernels, 8 channels per
// vector), then (T+2)^2 independent products M[xi] = V[xi] x U[xi] over the channels (one
// oneDNN batched matmul, or CKernels' panel kernel for few tiles; U = G g G^T packed once at
// load), then Y = A^T M A + bias, ReLU (CKernels). F(4x4, 3x3): 36 multiplies per 16 outputs
// instead of 144 (4x fewer FLOPs, at a small cost in rounding: the transforms scale values by up
// to ~100). F(2x2, 3x3): 16 per 4 instead of 36 (2.25x), with 2.25x less transformed weight to
// read and 4x more tiles per product, which wins on small images with many channels.

import CDNNL
import CKernels

/// One 3x3 stride-1 convolution (+ bias, + ReLU) by Winograd F(T x T, 3x3), T = 4 or 2.
final class WinogradConvolution: @unchecked Sendable {
    /// Output tile side T (4 or 2).
    let tile: Int
    /// Transform points per tile, (T + 2)^2: 36 or 16.
    var points: Int { (tile + 2) * (tile + 2) }

    let inChannels: Int, outChannels: Int
    let height: Int, width: Int, padding: Int
    let outHeight: Int, outWidth: Int
    let tilesWide: Int, tiles: Int
    let relu: Bool
    let srcLayout: ChannelLayout, dstLayout: ChannelLayout
    /// The products, [points, tiles, in] x [points, in, out], by oneDNN (unless `usesPanels`).
    let matmul: DNNL.Primitive
    /// Whether the few-tile kernel (CKernels) computes the products instead of `matmul`.
    let usesPanels: Bool
    /// U = G g G^T in the matmul's weight layout, or in panels of 6 output channels.
    let weights: DNNL.Buffer
    /// Below this many tiles the panel kernel computes the products: oneDNN's AVX2 matmul
    /// (gemm:jit) repacks U on every call, which for 16 tiles costs about as much as the
    /// multiplies. Measured on an AVX2 EPYC, one thread: in C on the RN50 shapes,
    /// 36 x [16, 512] x [512, 512] in 8.2 ms by gemm:jit, 4.7 by a panel kernel, the two within
    /// 10% from 49 tiles on; in the trunk, RN50's 16-tile layers 1.4-1.6 and 5.7 ms against
    /// 1.6-2.3 and 6.9, and the panel kernel (reading U once per 16 tiles) slower than gemm:jit
    /// at 49 to 784 tiles.
    static let panelTiles = 32
    /// [out], nil when the convolution has none.
    let bias: DNNL.Buffer?

    /// Floats of the transformed input V and of the products M.
    var inputTransformCount: Int { points * tiles * inChannels }
    var productCount: Int { points * tiles * outChannels }

    /// Whether Winograd can compute `conv` (3x3, stride 1, padding <= 2, channels in multiples
    /// of 8). (Where a network takes it, and which tile: `KernelChoice`.)
    static func supports(_ conv: Conv2d) -> Bool {
        conv.kernel == 3 && conv.stride == 1 && conv.padding <= 2 && conv.inChannels % 8 == 0 && conv.outChannels % 8 == 0
    }

    /// `panels`: whether the panel kernel computes the products (nil: below `panelTiles`
    /// tiles). `threads` split the weight transform at load.
    init(_ conv: Conv2d, height: Int, width: Int, relu: Bool, srcLayout: ChannelLayout, dstLayout: ChannelLayout,
         tile: Int = 4, panels: Bool? = nil, threads: Int = 1) throws {
        guard tile == 4 || tile == 2 else {
            throw LightCapError.invalidArgument(reason: "Winograd: output tiles are 4x4 or 2x2, not \(tile)x\(tile)")
        }
        guard Self.supports(conv) else {
            throw LightCapError.invalidArgument(reason: "Winograd F(\(tile)x\(tile), 3x3) needs a 3x3 stride-1 convolution with padding <= 2 and channels in multiples of 8, got \(conv.weight.shape) stride \(conv.stride) padding \(conv.padding)")
        }
        try ChannelLayout.check(srcLayout, dstLayout, fit: conv, for: "Winograd")
        inChannels = conv.inChannels
        outChannels = conv.outChannels
        self.height = height
        self.width = width
        padding = conv.padding
        outHeight = conv.outputSize(height)
        outWidth = conv.outputSize(width)
        guard outHeight > 0, outWidth > 0 else {
            throw LightCapError.invalidArgument(reason: "Winograd: input \(height)x\(width) too small")
        }
        self.tile = tile
        tilesWide = (outWidth + tile - 1) / tile
        tiles = tilesWide * ((outHeight + tile - 1) / tile)
        let points = (tile + 2) * (tile + 2)
        self.relu = relu
        self.srcLayout = srcLayout
        self.dstLayout = dstLayout
        matmul = try DNNL.matmul(batch: points, m: tiles, k: inChannels, n: outChannels, bias: false)
        guard !matmul.implementation.hasPrefix("ref") else {  // oneDNN's reference loops: far slower than direct
            throw LightCapError.invalidArgument(reason: "Winograd: oneDNN has only \(matmul.implementation) for the batched matmul here")
        }
        usesPanels = panels ?? (tiles < Self.panelTiles)
        if usesPanels {
            let packed = DNNL.Buffer(bytes: lightcap_winograd_panel_floats(tile, inChannels, outChannels) * MemoryLayout<Float>.size)
            Self.transformWeights(conv.weight, tile: tile, into: packed.pointer.assumingMemoryBound(to: Float.self),
                                  panels: true, threads: threads)
            weights = packed
        } else {
            let desc = matmul.weightsDesc
            let packed = DNNL.Buffer(bytes: DNNL.bytes(desc))
            let plain = try DNNL.desc([points, conv.inChannels, conv.outChannels], dnnl_abc)
            if DNNL.equal(desc, plain) {  // gemm:jit takes U as it is: transform straight into it
                Self.transformWeights(conv.weight, tile: tile, into: packed.pointer.assumingMemoryBound(to: Float.self),
                                      threads: threads)
            } else {
                let u = TensorStorage(count: points * conv.inChannels * conv.outChannels)
                Self.transformWeights(conv.weight, tile: tile, into: u.base, threads: threads)
                try DNNL.reorder(UnsafeRawPointer(u.base), plain, into: packed.pointer, desc)
            }
            weights = packed
        }
        bias = conv.bias.map(DNNL.Buffer.init(copying:))
    }

    /// U[xi][c][k] = (G g[k][c] G^T)[xi] for a [out, in, 3, 3] weight (out % 8 == 0) and
    /// output tile side `tile`, into [P, in, out] floats at `u`, P = (tile + 2)^2 (or, with
    /// `panels`, the panel kernel's layout [P, out / 6 rounded up, in, 6] in zeroed memory):
    /// the C transform in float, 8 output channels per vector, the input channels split over
    /// `threads`.
    static func transformWeights(_ weight: Tensor, tile: Int = 4, into u: UnsafeMutablePointer<Float>,
                                 panels: Bool = false, threads: Int) {
        let (o, i) = (weight.shape[0], weight.shape[1])
        weight.withUnsafeBufferPointer {
            lightcap_winograd_weights(tile, $0.baseAddress!, o, i, panels ? 1 : 0, u, threads)
        }
    }

    /// The plain twin of `transformWeights`: U computed in Double, one value at a time.
    static func transformedWeights(_ weight: Tensor, tile: Int = 4) -> [Float] {
        let (o, i) = (weight.shape[0], weight.shape[1])
        let n = tile + 2
        // G (n x 3, row-major), Lavin & Gray's: F(4x4, 3x3) with points 0, +-1, +-2, infinity;
        // F(2x2, 3x3) with points 0, +-1, infinity.
        let g4: [Double] = [1.0 / 4, 0, 0, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6,
                            1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 24, -1.0 / 12, 1.0 / 6, 0, 0, 1]
        let g2: [Double] = [1, 0, 0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0, 0, 1]
        let g = tile == 4 ? g4 : g2
        var u = [Float](repeating: 0, count: n * n * i * o)
        u.withUnsafeMutableBufferPointer { u in
            weight.withUnsafeBufferPointer { w in
                var t = [Double](repeating: 0, count: 18)  // G f, n x 3
                for c in 0..<i {
                    for k in 0..<o {  // k innermost: the writes to U are contiguous
                        let f = w.baseAddress! + (k * i + c) * 9
                        for r in 0..<n {
                            for col in 0..<3 {
                                t[r * 3 + col] = g[r * 3] * Double(f[col]) + g[r * 3 + 1] * Double(f[3 + col])
                                    + g[r * 3 + 2] * Double(f[6 + col])
                            }
                        }
                        for r in 0..<n {
                            for s in 0..<n {
                                let v = t[r * 3] * g[s * 3] + t[r * 3 + 1] * g[s * 3 + 1] + t[r * 3 + 2] * g[s * 3 + 2]
                                u[((r * n + s) * i + c) * o + k] = Float(v)
                            }
                        }
                    }
                }
            }
        }
        return u
    }

    /// Prepared matmul arguments over a workspace's V and M buffers.
    func arguments(v: UnsafeMutableRawPointer, m: UnsafeMutableRawPointer, scratchpad: UnsafeMutableRawPointer,
                   keep: inout [DNNL.Memory]) throws -> DNNL.Arguments {
        if usesPanels { return DNNL.Arguments() }  // the panel kernel takes its pointers directly
        let src = try DNNL.Memory(try DNNL.desc([points, tiles, inChannels], dnnl_abc), v)
        let dst = try DNNL.Memory(try DNNL.desc([points, tiles, outChannels], dnnl_abc), m)
        let w = try DNNL.Memory(matmul.weightsDesc, weights.pointer)
        let s = try DNNL.Memory(matmul.scratchpadDesc, scratchpad)
        keep += [src, dst, w, s]
        var args = DNNL.Arguments()
        args.append(.src, src)
        args.append(.weights, w)
        args.append(.dst, dst)
        args.append(.scratchpad, s)
        return args
    }

    /// Runs the convolution: src (srcLayout) -> dst (dstLayout), through V and M, whose
    /// matmul `arguments` were made over the same buffers. The transforms split their tiles
    /// over `threads` threads of the OpenMP team the matmul (oneDNN) runs on.
    func run(src: UnsafePointer<Float>, dst: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
             m: UnsafeMutablePointer<Float>, arguments: DNNL.Arguments, stream: DNNL.Stream, threads: Int) throws {
        let inLayout = srcLayout.addressing(channels: inChannels, height: height, width: width)
        let outLayout = dstLayout.addressing(channels: outChannels, height: outHeight, width: outWidth)
        let b = bias.map { UnsafePointer($0.pointer.assumingMemoryBound(to: Float.self)) }
        lightcap_winograd_input(tile, src, inLayout, height, width, inChannels, padding, tilesWide, tiles, v, threads)
        if usesPanels {
            lightcap_winograd_products(tile, v, weights.pointer.assumingMemoryBound(to: Float.self), tiles, inChannels,
                                       outChannels, m, threads)
        } else {
            try matmul.execute(stream, arguments)
            stream.wait()
        }
        lightcap_winograd_output(tile, m, tiles, outChannels, b, relu ? 1 : 0, dst, outLayout, outHeight, outWidth, tilesWide,
                                 threads)
    }

    /// Its name in profiles: the transforms' vector path and what computes the products.
    var implementation: String {
        "lightcap_wino_\(tile)x3:\(LightCapKernels.isa)+\(usesPanels ? "panels" : matmul.implementation)"
    }
}
