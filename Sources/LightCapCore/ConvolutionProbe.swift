// ConvolutionProbe: one oneDNN convolution, F32 or INT8 (u8 source, s8 weights), on buffers of
// its own, for `lightcap bench int8-convolutions` (LightCapBench): how fast oneDNN's INT8 kernels
// run a layer of the trunk on this CPU against its F32 ones, before any INT8 path is built on
// them. The contents are zeros (the speed of these kernels does not depend on the values).

/// A created convolution and its buffers; `run` executes it once on the calling thread's oneDNN
/// thread count.
package final class ConvolutionProbe {
    /// oneDNN's implementation name (e.g. "brg:avx512_core_vnni").
    package let implementation: String
    private let primitive: DNNL.Primitive
    private let buffers: [DNNL.Buffer]
    private let memories: [DNNL.Memory]
    private let arguments: DNNL.Arguments

    /// A `kernel` x `kernel` convolution with `stride` and `padding` of a [1, inChannels, height,
    /// width] input into `outChannels`, with bias and ReLU; `int8`: u8 x s8 with per-channel
    /// output scales and a u8 output, else F32.
    package init(inChannels: Int, height: Int, width: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int,
                 int8: Bool) throws {
        let (oh, ow) = (Conv2d.outputSize(height, kernel: kernel, stride: stride, padding: padding),
                        Conv2d.outputSize(width, kernel: kernel, stride: stride, padding: padding))
        primitive = int8
            ? try DNNL.convolutionInt8(inChannels: inChannels, height: height, width: width, outChannels: outChannels,
                                       kernel: kernel, stride: stride, padding: padding,
                                       scales: [Float](repeating: 1.0 / 256, count: outChannels), relu: true)
            : try DNNL.convolution(src: try DNNL.desc([1, inChannels, height, width], .any), outChannels: outChannels,
                                   inChannels: inChannels, kernel: kernel, outHeight: oh, outWidth: ow, stride: stride,
                                   padding: padding, bias: true, sum: false, relu: true, algorithm: .direct)
        implementation = primitive.implementation
        var buffers: [DNNL.Buffer] = [], memories: [DNNL.Memory] = []
        var arguments = DNNL.Arguments()
        for (role, desc) in [(DNNL.Role.src, primitive.srcDesc), (.weights, primitive.weightsDesc), (.bias, primitive.biasDesc),
                             (.dst, primitive.dstDesc), (.scratchpad, primitive.scratchpadDesc)] {
            let buffer = DNNL.Buffer(bytes: DNNL.bytes(desc))
            let memory = try DNNL.Memory(desc, buffer.pointer)
            buffers.append(buffer)
            memories.append(memory)
            arguments.append(role, memory)
        }
        self.buffers = buffers
        self.memories = memories
        self.arguments = arguments
    }

    /// Runs the convolution once.
    package func run() throws {
        let stream = try DNNL.Stream()
        try withExtendedLifetime((buffers, memories)) {
            try primitive.execute(stream, arguments)
            stream.wait()
        }
    }
}
