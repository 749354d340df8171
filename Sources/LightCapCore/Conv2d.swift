// Conv2d: one 2-D convolution's weights and geometry, as PyTorch's `nn.Conv2d` holds them; a
// ConvolutionNetwork.Builder packs them into the kernel KernelChoice picks for the layer.

/// A 2-D convolution's weights and geometry (PyTorch `nn.Conv2d`, square kernel, OIHW).
public struct Conv2d: Sendable {
    /// [out, in, k, k].
    public let weight: Tensor
    /// [out] or nil.
    public let bias: Tensor?
    public let stride: Int
    public let padding: Int

    public var outChannels: Int { weight.shape[0] }
    public var inChannels: Int { weight.shape[1] }
    public var kernel: Int { weight.shape[2] }

    /// A convolution from a [out, in, k, k] weight and an optional [out] bias.
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0) throws {
        guard weight.rank == 4, weight.shape[2] == weight.shape[3], weight.shape.allSatisfy({ $0 > 0 }) else {
            throw LightCapError.invalidArgument(reason: "Conv2d weight must be [out, in, k, k], got \(weight.shape)")
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw LightCapError.invalidArgument(reason: "Conv2d bias \(bias.shape) does not match weight \(weight.shape)")
        }
        guard stride >= 1, padding >= 0 else {
            throw LightCapError.invalidArgument(reason: "Conv2d stride \(stride) / padding \(padding)")
        }
        self.weight = weight
        self.bias = bias
        self.stride = stride
        self.padding = padding
    }

    /// Output side for an input side `n`.
    public func outputSize(_ n: Int) -> Int { Self.outputSize(n, kernel: kernel, stride: stride, padding: padding) }

    /// Output side of a `kernel` x `kernel` convolution with `stride` and zero `padding` for an
    /// input side `n`.
    public static func outputSize(_ n: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        (n + 2 * padding - kernel) / stride + 1
    }

    /// Floating-point operations (2 per multiply-add) of the direct convolution into `out`.
    func flops(_ out: ConvolutionNetwork.Shape) -> Int {
        2 * outChannels * inChannels * kernel * kernel * out.height * out.width
    }
}
