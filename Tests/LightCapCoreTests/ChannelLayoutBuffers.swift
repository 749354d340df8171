@testable import LightCapCore

/// Moving CHW tensors in and out of the layouts LightCap's kernels read and write (through
/// oneDNN's reorder), for the kernel tests.
extension ChannelLayout {
    /// A buffer holding the [C, H, W] tensor `x` in this layout.
    func buffer(holding x: Tensor) throws -> DNNL.Buffer {
        let dims = [1] + x.shape
        let buffer = DNNL.Buffer(bytes: x.count * MemoryLayout<Float>.size)
        try x.withUnsafeBufferPointer {
            try DNNL.reorder(UnsafeRawPointer($0.baseAddress!), try DNNL.desc(dims, .nchw), into: buffer.pointer,
                             try DNNL.desc(dims, dnnl))
        }
        return buffer
    }

    /// The [C, H, W] tensor of `shape` that `buffer` holds in this layout.
    func tensor(_ shape: [Int], from buffer: DNNL.Buffer) throws -> Tensor {
        let dims = [1] + shape
        var y = Tensor(zeros: shape)
        try y.withUnsafeMutableBufferPointer {
            try DNNL.reorder(UnsafeRawPointer(buffer.pointer), try DNNL.desc(dims, dnnl),
                             into: UnsafeMutableRawPointer($0.baseAddress!), try DNNL.desc(dims, .nchw))
        }
        return y
    }
}
