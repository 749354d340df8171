// QuantizedConv2d: one 2-D convolution of an INT8 trunk: s8 weights with one scale per output
// channel (RowQuantization's rule, 127 levels), an F32 bias, and the scale at which its input,
// a ReLU's output (>= 0), is held in u8. A ConvolutionNetwork.Builder runs it as a quantizing
// reorder plus oneDNN's u8 x s8 convolution with an F32 output (docs/FORMAT.md, "INT8 trunk").

/// A convolution with INT8 weights and a u8 input: y = s_x * s_w[o] * sum(q_x * q_w) + bias[o],
/// where the input x is held as q_x = round(x / s_x) clamped to 0...255.
public struct QuantizedConv2d: Sendable {
    /// [out, in, k, k] levels in -127...127.
    public let weight: [Int8]
    /// [out, in, k, k].
    public let shape: [Int]
    /// s_w, one per output channel (positive).
    public let weightScales: [Float]
    /// [out] (F32).
    public let bias: Tensor?
    /// s_x: the input value of level 1 (255 levels cover 0...255 s_x).
    public let inputScale: Float
    public let stride: Int
    public let padding: Int

    public var outChannels: Int { shape[0] }
    public var inChannels: Int { shape[1] }
    public var kernel: Int { shape[2] }

    /// A quantized convolution from stored parts; every scale must be positive and finite.
    public init(weight: [Int8], shape: [Int], weightScales: [Float], bias: Tensor?, inputScale: Float, stride: Int,
                padding: Int) throws {
        guard shape.count == 4, shape[2] == shape[3], shape.allSatisfy({ $0 > 0 }), weight.count == Tensor.elementCount(shape) else {
            throw LightCapError.invalidArgument(reason: "INT8 convolution weight must be [out, in, k, k], got \(shape) with \(weight.count) values")
        }
        guard weightScales.count == shape[0] else {
            throw LightCapError.invalidArgument(reason: "INT8 convolution has \(weightScales.count) weight scales for \(shape[0]) output channels")
        }
        if let bad = weightScales.firstIndex(where: { !($0.isFinite && $0 > 0) }) {
            throw LightCapError.invalidArgument(reason: "INT8 convolution weight scale \(bad) is \(weightScales[bad]), not a positive finite number")
        }
        guard inputScale.isFinite, inputScale > 0 else {
            throw LightCapError.invalidArgument(reason: "INT8 convolution input scale is \(inputScale), not a positive finite number")
        }
        if let bias, bias.shape != [shape[0]] {
            throw LightCapError.invalidArgument(reason: "INT8 convolution bias \(bias.shape) does not match weight \(shape)")
        }
        guard stride >= 1, padding >= 0 else {
            throw LightCapError.invalidArgument(reason: "INT8 convolution stride \(stride) / padding \(padding)")
        }
        self.weight = weight
        self.shape = shape
        self.weightScales = weightScales
        self.bias = bias
        self.inputScale = inputScale
        self.stride = stride
        self.padding = padding
    }

    /// `conv` quantized: each output channel's weights on 127 levels either side of zero
    /// (`RowQuantization`), an input whose largest value is `inputMax` on 255 levels.
    public init(_ conv: Conv2d, inputMax: Float) throws {
        var levels = [Int8](repeating: 0, count: conv.weight.count)
        let rows = conv.weight.withUnsafeBufferPointer { w in
            levels.withUnsafeMutableBufferPointer { q in
                RowQuantization(w, width: conv.weight.count / conv.outChannels, levels: 127, into: q)
            }
        }
        try self.init(weight: levels, shape: conv.weight.shape, weightScales: rows.scales, bias: conv.bias,
                      inputScale: inputMax > 0 && inputMax.isFinite ? inputMax / 255 : 1, stride: conv.stride,
                      padding: conv.padding)
    }

    /// The convolution oneDNN's kernels multiply here: itself where weights may use 127 levels
    /// (`OneDNNInt8.weightLevels`), else its weights halved onto 63 levels (q' = round(q / 2)
    /// clamped to +-63; scale 2 s_w), which the kernels without VNNI add in 16 bits without
    /// saturating. The stored model keeps 127 levels for the hosts that can use them.
    /// Throws where a doubled scale overflows (a scale near Float's largest, from a hostile file).
    public func forKernels(weightLevels: Int = OneDNNInt8.weightLevels) throws -> QuantizedConv2d {
        guard weightLevels < 127 else { return self }
        precondition(weightLevels == 63, "QuantizedConv2d: \(weightLevels) weight levels")
        return try QuantizedConv2d(weight: weight.map { Int8(max(-63, min(63, (Float($0) / 2).rounded()))) }, shape: shape,
                                    weightScales: weightScales.map { $0 * 2 }, bias: bias, inputScale: inputScale,
                                    stride: stride, padding: padding)
    }

    /// Output side for an input side `n`.
    public func outputSize(_ n: Int) -> Int { Conv2d.outputSize(n, kernel: kernel, stride: stride, padding: padding) }
}
