// ConvolutionNetwork: a fixed-shape chain of convolutions (fused bias, ReLU and residual add)
// and average pools, by oneDNN's kernels or LightCap's (KernelChoice picks per layer). Weights
// are packed into each kernel's layout once, when the network is built (ConvolutionBuilder.swift);
// activations stay in the kernels' blocked layouts between ops and live in a few reused buffers
// (BufferPlan.swift) of a per-caller Workspace (ConvolutionWorkspace.swift). oneDNN itself:
// DNNL.swift.

/// A built, read-only network; run it with one `Workspace` per concurrent caller.
public final class ConvolutionNetwork: @unchecked Sendable {
    /// An activation of the network.
    public struct Value: Hashable, Sendable {
        public let index: Int
    }

    /// Channels x height x width of an activation (batch 1).
    public struct Shape: Equatable, Sendable {
        public let channels: Int, height: Int, width: Int
        public var count: Int { channels * height * width }
    }

    /// What an op runs.
    enum Kind {
        /// oneDNN's convolution primitive (`Op.primitive`) with its packed weights and bias.
        case oneDNNConvolution(weights: DNNL.Buffer, bias: DNNL.Buffer?, residual: Value?, flops: Int)
        /// LightCap's Winograd; `Op.primitive` is its batched matmul.
        case lightcapWinograd(WinogradConvolution, flops: Int)
        /// LightCap's direct kernel; `Op.primitive` is oneDNN's convolution it replaces (never
        /// run). The residual, if any, is already in the output's buffer (as with
        /// `.oneDNNConvolution`).
        case lightcapDirect(DirectConvolution, residual: Value?, flops: Int)
        /// oneDNN's pooling (`Op.primitive`).
        case oneDNNPool
        /// LightCap's pool; `Op.primitive` is the oneDNN pooling it replaces (never run).
        case lightcapPool(AveragePool)
        /// oneDNN's reorder (`Op.primitive`): a layout change or a copy.
        case reorder
    }

    struct Op {
        let kind: Kind
        let primitive: DNNL.Primitive
        let input: Value
        let output: Value
        let label: String

        /// Floating-point operations of the convolution it computes (0 for other ops).
        var flops: Int {
            switch kind {
            case .oneDNNConvolution(_, _, _, let f), .lightcapWinograd(_, let f), .lightcapDirect(_, _, let f): return f
            case .oneDNNPool, .lightcapPool, .reorder: return 0
            }
        }

        /// The value added to the output (its buffer is the output's), if any.
        var residual: Value? {
            switch kind {
            case .oneDNNConvolution(_, _, let r, _), .lightcapDirect(_, let r, _): return r
            default: return nil
            }
        }

        /// oneDNN's implementation name, or the LightCap kernel's.
        var implementation: String {
            switch kind {
            case .lightcapWinograd(let w, _): return w.implementation
            case .lightcapDirect(let d, _, _): return d.implementation
            case .lightcapPool(let p): return p.implementation
            default: return primitive.implementation
            }
        }
    }

    struct ValueInfo {
        let shape: Shape
        let desc: DNNL.MemoryDesc
        /// The value whose buffer this one shares (in-place residual accumulation).
        var alias: Int?
    }

    let ops: [Op]
    let values: [ValueInfo]
    /// Buffer slot of each value (-1: the caller's input).
    let slots: [Int]
    let slotBytes: [Int]
    let scratchpadBytes: Int
    let outputValue: Value
    let outputDesc: DNNL.MemoryDesc
    let outputReorder: DNNL.Primitive
    /// The oneDNN threads the network was built for and runs on (oneDNN sizes a primitive's
    /// split of the work for the threads current when it is created: a network built on one
    /// thread and run on two would leave the second idle).
    public let threads: Int
    /// Input shape.
    public let inputShape: Shape
    /// Output shape; `run` writes it as tokens [height * width, channels] (row-major).
    public let outputShape: Shape

    /// Floating-point operations of all convolutions (2 per multiply-add).
    public var convolutionFlops: Int {
        ops.reduce(0) { $0 + $1.flops }
    }

    /// The implementation of each op (oneDNN's name or LightCap's), for reports.
    public var implementations: [(label: String, implementation: String)] {
        ops.map { ($0.label, $0.implementation) }
    }

    /// Bytes of packed weights and biases.
    public var packedWeightBytes: Int {
        ops.reduce(0) {
            switch $1.kind {
            case .oneDNNConvolution(let w, let b, _, _): return $0 + w.bytes + (b?.bytes ?? 0)
            case .lightcapWinograd(let w, _): return $0 + w.weights.bytes + (w.bias?.bytes ?? 0)
            case .lightcapDirect(let d, _, _): return $0 + d.weights.bytes + (d.bias?.bytes ?? 0)
            case .oneDNNPool, .lightcapPool, .reorder: return $0
            }
        }
    }

    /// The network of `builder`'s ops producing `output`, then a reorder of it into tokens.
    init(builder: Builder, output: Value) throws {
        var ops = builder.ops
        let values = builder.values
        threads = builder.threads
        inputShape = values[0].shape
        outputShape = values[output.index].shape
        let plan = try BufferPlan(ops: ops, values: values, output: output)
        self.values = values
        slots = plan.slots
        slotBytes = plan.slotBytes
        outputDesc = try DNNL.desc([1, outputShape.channels, outputShape.height, outputShape.width], .nhwc)
        outputReorder = try DNNL.Primitive(reorderFrom: values[output.index].desc, to: outputDesc)
        ops.append(Op(kind: .reorder, primitive: outputReorder, input: output, output: output, label: "output"))
        self.ops = ops
        outputValue = output
        scratchpadBytes = ops.map { $0.primitive.scratchpadBytes }.max() ?? 0
    }

    /// Runs the network: `input` is [C, H, W] (CHW, row-major), `output` receives
    /// [H' * W', C'] tokens (row-major).
    public func run(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, workspace: Workspace) throws {
        guard workspace.network === self else {
            throw LightCapError.invalidArgument(reason: "the workspace belongs to another network")
        }
        try workspace.inputMemory.setPointer(UnsafeMutableRawPointer(mutating: input))
        try workspace.outputMemory.setPointer(UnsafeMutableRawPointer(output))
        try Threads.with(threads) {
            for call in workspace.calls {
                try workspace.execute(call)
            }
            workspace.stream.wait()
        }
    }

    /// Runs the network on a [C, H, W] tensor; returns [H' * W', C'] tokens.
    public func callAsFunction(_ input: Tensor, workspace: Workspace? = nil) throws -> Tensor {
        guard input.count == inputShape.count else {
            throw LightCapError.invalidArgument(reason: "network input has \(input.count) values, expected \(inputShape.channels)x\(inputShape.height)x\(inputShape.width)")
        }
        var out = Tensor(zeros: [outputShape.height * outputShape.width, outputShape.channels])
        let ws = try workspace ?? makeWorkspace()
        try input.withUnsafeBufferPointer { x in
            try out.withUnsafeMutableBufferPointer { y in try run(input: x.baseAddress!, output: y.baseAddress!, workspace: ws) }
        }
        return out
    }
}
