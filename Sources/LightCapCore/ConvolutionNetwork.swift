// ConvolutionNetwork: a fixed-shape chain of oneDNN convolutions (fused bias, ReLU and
// residual add) and average pools. Weights are packed into each primitive's preferred layout
// once, when the network is built; activations stay in oneDNN's blocked layout between ops
// and live in a few reused buffers of a per-call Workspace. (oneDNN itself: DNNL.swift.)

import Dispatch

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
    public func outputSize(_ n: Int) -> Int { (n + 2 * padding - kernel) / stride + 1 }

    /// Floating-point operations (2 per multiply-add) of the direct convolution into `out`.
    func flops(_ out: ConvolutionNetwork.Shape) -> Int {
        2 * outChannels * inChannels * kernel * kernel * out.height * out.width
    }
}

/// How oneDNN computes the 3x3 stride-1 convolutions.
public enum ConvolutionAlgorithm: String, Sendable, CaseIterable {
    /// Direct convolution (exact up to summation order): LightCap's own kernel
    /// (`DirectConvolution`) where it beats oneDNN's AVX2 kernels (stride 1: 3x3 with >= 128
    /// output channels, 1x1 at output sides up to 7), oneDNN's elsewhere.
    case direct
    /// Direct convolution and average pools by oneDNN's kernels everywhere, for comparisons.
    /// Every other choice pools by LightCap's `AveragePool`.
    case directOneDNN = "direct-onednn"
    /// Winograd for the 3x3 stride-1 convolutions where it is faster (output side >= 14, >= 64
    /// output channels); others direct. Slightly less exact, slower to load.
    case winograd
    /// oneDNN chooses per convolution.
    case auto
    /// LightCap's own Winograd (`WinogradConvolution`) for the 3x3 stride-1 convolutions without
    /// a residual, on any x86-64 CPU: F(4x4, 3x3) at output sides >= 12, F(2x2, 3x3) at 6 to
    /// 11; others direct.
    case winograd4x4
}

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

    enum Kind {
        case convolution(weights: DNNL.Buffer, bias: DNNL.Buffer?, residual: Value?, flops: Int)
        /// `primitive` is its batched matmul.
        case winograd(WinogradConvolution, flops: Int)
        /// `primitive` is oneDNN's direct convolution it replaces (never run); the residual, if
        /// any, is already in the output's buffer (as with `.convolution`).
        case lightcapDirect(DirectConvolution, residual: Value?, flops: Int)
        /// oneDNN's pooling; `.lightcapPool`: LightCap's, `primitive` the oneDNN pooling it
        /// replaces (never run).
        case pool
        case lightcapPool(AveragePool)
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
            case .convolution(_, _, _, let f), .winograd(_, let f), .lightcapDirect(_, _, let f): return f
            case .pool, .lightcapPool, .reorder: return 0
            }
        }

        /// The value added to the output (its buffer is the output's), if any.
        var residual: Value? {
            switch kind {
            case .convolution(_, _, let r, _), .lightcapDirect(_, let r, _): return r
            default: return nil
            }
        }

        /// oneDNN's implementation name, or the Winograd transforms' and their products'.
        var implementation: String {
            switch kind {
            case .winograd(let w, _): return w.implementation
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

    /// oneDNN implementation of each op, for reports.
    public var implementations: [(label: String, implementation: String)] {
        ops.map { ($0.label, $0.implementation) }
    }

    /// Bytes of packed weights and biases.
    public var packedWeightBytes: Int {
        ops.reduce(0) {
            switch $1.kind {
            case .convolution(let w, let b, _, _): return $0 + w.bytes + (b?.bytes ?? 0)
            case .winograd(let w, _): return $0 + w.weights.bytes + (w.bias?.bytes ?? 0)
            case .lightcapDirect(let d, _, _): return $0 + d.weights.bytes + (d.bias?.bytes ?? 0)
            case .pool, .lightcapPool, .reorder: return $0
            }
        }
    }

    init(builder: Builder, output: Value) throws {
        var ops = builder.ops
        let values = builder.values
        threads = builder.threads
        inputShape = values[0].shape
        outputShape = values[output.index].shape
        // Last use of each value.
        var lastUse = [Int](repeating: -1, count: values.count)
        for (i, op) in ops.enumerated() {
            lastUse[op.input.index] = i
            if let r = op.residual { lastUse[r.index] = i }
        }
        lastUse[output.index] = ops.count
        for (i, op) in ops.enumerated() {
            if let r = op.residual, lastUse[r.index] != i {
                throw LightCapError.invalidArgument(reason: "a residual value is used after the convolution that adds it (\(op.label))")
            }
        }
        // Buffer slots: reuse freed buffers, best fit.
        var slots = [Int](repeating: -1, count: values.count)
        var slotBytes: [Int] = []
        var free: [Int] = []
        for (i, op) in ops.enumerated() {
            let out = op.output.index
            if let a = values[out].alias {
                slots[out] = slots[a]
            } else {
                let need = DNNL.bytes(values[out].desc)
                let fits = free.filter { slotBytes[$0] >= need }.min { slotBytes[$0] < slotBytes[$1] }
                if let s = fits ?? free.max(by: { slotBytes[$0] < slotBytes[$1] }) {
                    free.removeAll { $0 == s }
                    slotBytes[s] = max(slotBytes[s], need)
                    slots[out] = s
                } else {
                    slotBytes.append(need)
                    slots[out] = slotBytes.count - 1
                }
            }
            var inputs = [op.input.index]
            if let r = op.residual { inputs.append(r.index) }
            for v in inputs where lastUse[v] == i && slots[v] >= 0 && slots[v] != slots[out] && !free.contains(slots[v]) {
                free.append(slots[v])
            }
        }
        self.values = values
        self.slots = slots
        self.slotBytes = slotBytes
        outputDesc = try DNNL.desc([1, outputShape.channels, outputShape.height, outputShape.width], .nhwc)
        outputReorder = try DNNL.Primitive(reorderFrom: values[output.index].desc, to: outputDesc)
        ops.append(Op(kind: .reorder, primitive: outputReorder, input: output, output: output, label: "output"))
        self.ops = ops
        self.outputValue = output
        scratchpadBytes = ops.map { $0.primitive.scratchpadBytes }.max() ?? 0
    }

    let outputValue: Value

    /// Per-caller buffers, memory objects and stream. Not shared between threads.
    public final class Workspace {
        let network: ConvolutionNetwork
        let buffers: [DNNL.Buffer]
        let scratchpad: DNNL.Buffer
        let stream: DNNL.Stream
        let memories: [DNNL.Memory?]
        let inputMemory: DNNL.Memory
        let outputMemory: DNNL.Memory
        /// Winograd ops' transformed inputs and products (the largest of any op).
        let winogradInput: DNNL.Buffer
        let winogradProducts: DNNL.Buffer
        /// The zero-padded input copy of LightCap's direct kernel (the largest of any op).
        let directScratch: DNNL.Buffer
        var keep: [DNNL.Memory] = []
        var calls: [Call] = []

        enum Call {
            case primitive(DNNL.Primitive, DNNL.Arguments)
            case winograd(WinogradConvolution, src: UnsafeMutableRawPointer, dst: UnsafeMutableRawPointer, DNNL.Arguments)
            case lightcapDirect(DirectConvolution, src: UnsafeMutableRawPointer, dst: UnsafeMutableRawPointer)
            case lightcapPool(AveragePool, src: UnsafeMutableRawPointer, dst: UnsafeMutableRawPointer)
        }

        init(_ network: ConvolutionNetwork) throws {
            self.network = network
            buffers = network.slotBytes.map { DNNL.Buffer(bytes: $0) }
            scratchpad = DNNL.Buffer(bytes: network.scratchpadBytes)
            stream = try DNNL.Stream()
            inputMemory = try DNNL.Memory(network.values[0].desc, nil)
            outputMemory = try DNNL.Memory(network.outputDesc, nil)
            var memories: [DNNL.Memory?] = [inputMemory]
            for v in 1..<network.values.count {
                let s = network.slots[v]
                memories.append(s >= 0 ? try DNNL.Memory(network.values[v].desc, buffers[s].pointer) : nil)
            }
            self.memories = memories
            var inputFloats = 0, productFloats = 0, scratchFloats = 0
            for op in network.ops {
                switch op.kind {
                case .winograd(let w, _):
                    inputFloats = max(inputFloats, w.inputTransformCount)
                    productFloats = max(productFloats, w.productCount)
                case .lightcapDirect(let d, _, _):
                    scratchFloats = max(scratchFloats, d.scratchCount)
                default: break
                }
            }
            winogradInput = DNNL.Buffer(bytes: inputFloats * MemoryLayout<Float>.size)
            winogradProducts = DNNL.Buffer(bytes: productFloats * MemoryLayout<Float>.size)
            directScratch = DNNL.Buffer(bytes: scratchFloats * MemoryLayout<Float>.size)
            let scratchMemories = try network.ops.map {
                try DNNL.Memory($0.primitive.scratchpadDesc, scratchpad.pointer)
            }
            keep.append(contentsOf: scratchMemories)
            /// The buffer of value `v` (not the network's input: it has none).
            func buffer(_ v: Value) -> UnsafeMutableRawPointer { buffers[network.slots[v.index]].pointer }
            for (i, op) in network.ops.enumerated() {
                var args = DNNL.Arguments()
                args.append(.scratchpad, scratchMemories[i])
                switch op.kind {
                case .convolution(let w, let b, _, _):
                    args.append(.src, memories[op.input.index]!)
                    args.append(.dst, memories[op.output.index]!)
                    let wm = try DNNL.Memory(op.primitive.weightsDesc, w.pointer)
                    keep.append(wm)
                    args.append(.weights, wm)
                    if let b {
                        let bm = try DNNL.Memory(op.primitive.biasDesc, b.pointer)
                        keep.append(bm)
                        args.append(.bias, bm)
                    }
                case .winograd(let w, _):
                    // Never the network's input (value 0 has no buffer): addWinograd copies it first.
                    let (src, dst) = (buffer(op.input), buffer(op.output))
                    let margs = try w.arguments(v: winogradInput.pointer, m: winogradProducts.pointer,
                                                scratchpad: scratchpad.pointer, keep: &keep)
                    calls.append(.winograd(w, src: src, dst: dst, margs))
                    continue
                case .lightcapDirect(let d, _, _):
                    // Never the network's input either (addLightCapDirect copies it first).
                    calls.append(.lightcapDirect(d, src: buffer(op.input), dst: buffer(op.output)))
                    continue
                case .lightcapPool(let p):
                    // Never the network's input (addAveragePool leaves that to oneDNN), nor its
                    // output's slot (the output reorder comes after).
                    calls.append(.lightcapPool(p, src: buffer(op.input), dst: buffer(op.output)))
                    continue
                case .pool, .reorder:
                    args.append(.src, memories[op.input.index]!)
                    args.append(.dst, i == network.ops.count - 1 ? outputMemory : memories[op.output.index]!)
                }
                calls.append(.primitive(op.primitive, args))
            }
        }
    }

    /// A workspace for `run` (reuse it across calls on one thread).
    public func makeWorkspace() throws -> Workspace { try Workspace(self) }

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
                try execute(call, workspace)
            }
            workspace.stream.wait()
        }
    }

    private func execute(_ call: Workspace.Call, _ workspace: Workspace) throws {
        switch call {
        case .primitive(let primitive, let args):
            try primitive.execute(workspace.stream, args)
        case .winograd(let w, let src, let dst, let args):
            workspace.stream.wait()
            try w.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self),
                      v: workspace.winogradInput.pointer.assumingMemoryBound(to: Float.self),
                      m: workspace.winogradProducts.pointer.assumingMemoryBound(to: Float.self),
                      arguments: args, stream: workspace.stream, threads: threads)
        case .lightcapDirect(let d, let src, let dst):
            workspace.stream.wait()
            d.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self),
                  scratch: workspace.directScratch.pointer.assumingMemoryBound(to: Float.self), threads: threads)
        case .lightcapPool(let p, let src, let dst):
            workspace.stream.wait()
            p.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self), threads: threads)
        }
    }

    /// The time of one op of the network (`profile`).
    public struct OpTime: Codable, Sendable {
        public let label: String
        /// oneDNN's implementation name.
        public let implementation: String
        /// Floating-point operations (convolutions; 0 for reorders and pools).
        public let flops: Int
        /// Milliseconds of each run.
        public let samples: [Double]
    }

    /// Runs the network `runs` times (after one warm-up run), timing each op on its own: the
    /// milliseconds of every op in every run, ops in order. The ops run exactly as in `run` (same
    /// buffers, threads and order), with a clock read between them.
    public func profile(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, workspace: Workspace,
                        runs: Int) throws -> [OpTime] {
        guard workspace.network === self else {
            throw LightCapError.invalidArgument(reason: "the workspace belongs to another network")
        }
        guard runs >= 1 else { throw LightCapError.invalidArgument(reason: "profile needs at least one run, got \(runs)") }
        try workspace.inputMemory.setPointer(UnsafeMutableRawPointer(mutating: input))
        try workspace.outputMemory.setPointer(UnsafeMutableRawPointer(output))
        var samples = [[Double]](repeating: [], count: ops.count)
        try Threads.with(threads) {
            for run in 0...runs {
                for (i, call) in workspace.calls.enumerated() {
                    let start = DispatchTime.now().uptimeNanoseconds
                    try execute(call, workspace)
                    workspace.stream.wait()
                    if run > 0 { samples[i].append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
                }
            }
        }
        return zip(ops, samples).map { op, times in
            OpTime(label: op.label, implementation: op.implementation, flops: op.flops, samples: times)
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

    /// Builds a network op by op; weights are packed as each convolution is added.
    public final class Builder {
        var ops: [Op] = []
        var values: [ValueInfo] = []
        let algorithm: ConvolutionAlgorithm
        /// The oneDNN threads the network is built for (`ConvolutionNetwork.threads`).
        public let threads: Int

        /// The network input, [channels, height, width] in CHW layout.
        public let input: Value

        /// A builder for an input of `channels` x `height` x `width`, for a network that runs on
        /// `threads` oneDNN threads.
        public init(channels: Int, height: Int, width: Int, algorithm: ConvolutionAlgorithm = .direct, threads: Int = 1) throws {
            guard threads >= 1 else { throw LightCapError.invalidArgument(reason: "threads must be at least 1, got \(threads)") }
            self.algorithm = algorithm
            self.threads = threads
            let shape = Shape(channels: channels, height: height, width: width)
            values.append(ValueInfo(shape: shape, desc: try DNNL.desc([1, channels, height, width], .nchw)))
            input = Value(index: 0)
        }

        /// The shape of `value`.
        public func shape(_ value: Value) -> Shape { values[value.index].shape }

        private func add(_ shape: Shape, _ desc: DNNL.MemoryDesc, alias: Int? = nil) -> Value {
            values.append(ValueInfo(shape: shape, desc: desc, alias: alias))
            return Value(index: values.count - 1)
        }

        /// `value` in the layout `desc` (a reorder op when it differs).
        private func converted(_ value: Value, to desc: DNNL.MemoryDesc) throws -> Value {
            if DNNL.equal(values[value.index].desc, desc) { return value }
            let p = try DNNL.Primitive(reorderFrom: values[value.index].desc, to: desc)
            let out = add(values[value.index].shape, desc)
            ops.append(Op(kind: .reorder, primitive: p, input: value, output: out, label: "reorder"))
            return out
        }

        /// conv(x) + bias, then `+ residual` (if given), then ReLU (if `relu`). The residual's
        /// buffer is reused for the output, so it must not be read afterwards.
        public func convolution(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value? = nil, label: String = "conv") throws -> Value {
            try Threads.with(threads) { try addConvolution(x, conv, relu: relu, residual: residual, label: label) }
        }

        private func addConvolution(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value?, label: String) throws -> Value {
            let s = shape(x)
            guard conv.inChannels == s.channels else {
                throw LightCapError.invalidArgument(reason: "\(label): input has \(s.channels) channels, weight \(conv.weight.shape)")
            }
            let outShape = Shape(channels: conv.outChannels, height: conv.outputSize(s.height), width: conv.outputSize(s.width))
            guard outShape.height > 0, outShape.width > 0 else {
                throw LightCapError.invalidArgument(reason: "\(label): input \(s.height)x\(s.width) too small")
            }
            if let residual, shape(residual) != outShape {
                throw LightCapError.invalidArgument(reason: "\(label): residual \(shape(residual)) does not match output \(outShape)")
            }
            // Winograd where oneDNN's kernels beat direct on avx512_core (measured per layer on the
            // RN50 trunk): 3x3 stride 1, output side >= 14, >= 64 output channels.
            let isWinogradShape = conv.kernel == 3 && conv.stride == 1 && outShape.height >= 14 && outShape.width >= 14
                && conv.outChannels >= 64
            let algorithms: [DNNL.ConvolutionKind]
            switch algorithm {
            case .direct, .directOneDNN: algorithms = [.direct]
            case .winograd: algorithms = isWinogradShape ? [.winograd, .direct] : [.direct]
            case .auto: algorithms = [.auto, .direct]
            case .winograd4x4: algorithms = [.direct]
            }
            var primitive: DNNL.Primitive?
            var lastError: Error?
            for alg in algorithms {
                // Winograd kernels read and write nChw16c; direct (brgconv) kernels run fastest on
                // nhwc, which they choose themselves. Reorders go between the two kinds.
                let blocked = alg == .winograd && s.channels % 16 == 0 && conv.outChannels % 16 == 0
                do {
                    let candidate = try DNNL.convolution(
                        src: try DNNL.desc([1, s.channels, s.height, s.width], blocked ? .nChw16c : .any),
                        outChannels: conv.outChannels, inChannels: conv.inChannels, kernel: conv.kernel,
                        outHeight: outShape.height, outWidth: outShape.width, stride: conv.stride, padding: conv.padding,
                        bias: conv.bias != nil, sum: residual != nil, relu: relu, algorithm: alg,
                        dstLayout: blocked ? .nChw16c : .any)
                    // Without AVX-512 oneDNN has no Winograd kernels and answers with its reference
                    // loop nest (ref:any), far slower than the direct kernel: take the direct kernel instead.
                    if alg == .winograd && candidate.implementation.hasPrefix("ref") && alg != algorithms.last {
                        lastError = LightCapError.invalidArgument(reason: "\(label): oneDNN has only \(candidate.implementation) for Winograd here")
                        continue
                    }
                    primitive = candidate
                    break
                } catch { lastError = error }
            }
            guard let primitive else { throw lastError! }
            if algorithm == .winograd4x4 && residual == nil && WinogradConvolution.supports(conv),
               let tile = Self.winogradTile(outShape),
               let out = try? addWinograd(x, conv, relu: relu, outShape: outShape, tile: tile, direct: primitive, label: label) {
                return out  // else (no fast batched matmul here) the direct kernel
            }
            if algorithm != .directOneDNN && DirectConvolution.supports(conv)
                && DirectConvolution.isFaster(conv, outHeight: outShape.height, outWidth: outShape.width,
                                              oneDNN: primitive.implementation) {
                return try addLightCapDirect(x, conv, relu: relu, residual: residual, outShape: outShape, direct: primitive,
                                             label: label)
            }
            let src = try converted(x, to: primitive.srcDesc)
            // Pack weights (OIHW -> the primitive's layout) and bias, once.
            let wDesc = primitive.weightsDesc
            let weights = DNNL.Buffer(bytes: DNNL.bytes(wDesc))
            try conv.weight.withUnsafeBufferPointer {
                try DNNL.reorder(UnsafeRawPointer($0.baseAddress!), try DNNL.desc(conv.weight.shape, .oihw), into: weights.pointer, wDesc)
            }
            var bias: DNNL.Buffer?
            if let b = conv.bias {
                let bDesc = primitive.biasDesc
                let buffer = DNNL.Buffer(bytes: DNNL.bytes(bDesc))
                try b.withUnsafeBufferPointer {
                    try DNNL.reorder(UnsafeRawPointer($0.baseAddress!), try DNNL.desc([conv.outChannels], .x), into: buffer.pointer, bDesc)
                }
                bias = buffer
            }
            let (out, residualValue) = try output(outShape, primitive.dstDesc, residual: residual, src: src)
            ops.append(Op(kind: .convolution(weights: weights, bias: bias, residual: residualValue,
                                             flops: conv.flops(outShape)),
                          primitive: primitive, input: src, output: out, label: label))
            return out
        }

        /// Which of LightCap's Winograd convolutions beats oneDNN's direct kernel (`winograd4x4`):
        /// F(4x4, 3x3) at output side >= 12, F(2x2, 3x3) at sides 6 to 11, none below. On the
        /// RN50 trunk (AVX2, `lightcap-bench-visual --profile`, one thread) F(4x4) ran the 3x3
        /// layers at sides 112 to 14 1.6-3.3x faster than direct, but at side 7 (4 tiles for 49
        /// outputs, 37.7 MB of transformed weights read for them) no faster; F(2x2) at side 7 has
        /// 16 tiles and 16.8 MB (products by the panel kernel).
        static func winogradTile(_ out: Shape) -> Int? {
            let side = min(out.height, out.width)
            return side >= 12 ? 4 : side >= 6 ? 2 : nil
        }

        /// A `WinogradConvolution` reading and writing the layouts the direct kernel `direct`
        /// would (so its neighbours need no reorders), nhwc where the transforms can't.
        private func addWinograd(_ x: Value, _ conv: Conv2d, relu: Bool, outShape: Shape, tile: Int,
                                 direct: DNNL.Primitive, label: String) throws -> Value {
            let s = shape(x)
            let srcLayout = try ChannelLayout(direct.srcDesc, s), dstLayout = try ChannelLayout(direct.dstDesc, outShape)
            let w = try WinogradConvolution(conv, height: s.height, width: s.width, relu: relu,
                                            srcLayout: srcLayout, dstLayout: dstLayout, tile: tile, threads: threads)
            var src = try converted(x, to: try DNNL.desc([1, s.channels, s.height, s.width], srcLayout.dnnl))
            if src.index == 0 { src = try copy(src) }
            let out = add(outShape, try DNNL.desc([1, outShape.channels, outShape.height, outShape.width], dstLayout.dnnl))
            ops.append(Op(kind: .winograd(w, flops: conv.flops(outShape)), primitive: w.matmul, input: src, output: out,
                          label: label))
            return out
        }

        /// A convolution's output value in `desc`: with a residual, (a copy of) the residual in
        /// that layout, which the convolution accumulates into in place (not over the network's
        /// input, nor over `src`, the input it convolves); that residual value is returned too.
        private func output(_ shape: Shape, _ desc: DNNL.MemoryDesc, residual: Value?, src: Value) throws -> (Value, Value?) {
            guard let residual else { return (add(shape, desc), nil) }
            var r = try converted(residual, to: desc)
            if r.index == 0 || r == src { r = try copy(r) }
            return (add(shape, desc, alias: values[r.index].alias ?? r.index), r)
        }

        /// A `DirectConvolution` reading and writing the layouts oneDNN's direct kernel `direct`
        /// would (so its neighbours need no reorders), nhwc where those don't fit.
        private func addLightCapDirect(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value?, outShape: Shape,
                                       direct: DNNL.Primitive, label: String) throws -> Value {
            let s = shape(x)
            let srcLayout = try ChannelLayout(direct.srcDesc, s), dstLayout = try ChannelLayout(direct.dstDesc, outShape)
            let d = try DirectConvolution(conv, height: s.height, width: s.width, relu: relu, residual: residual != nil,
                                          srcLayout: srcLayout, dstLayout: dstLayout, threads: threads)
            var src = try converted(x, to: try DNNL.desc([1, s.channels, s.height, s.width], srcLayout.dnnl))
            if src.index == 0 { src = try copy(src) }
            let dstDesc = try DNNL.desc([1, outShape.channels, outShape.height, outShape.width], dstLayout.dnnl)
            let (out, residualValue) = try output(outShape, dstDesc, residual: residual, src: src)
            ops.append(Op(kind: .lightcapDirect(d, residual: residualValue, flops: conv.flops(outShape)), primitive: direct, input: src,
                          output: out, label: label))
            return out
        }

        private func copy(_ value: Value) throws -> Value {
            let desc = values[value.index].desc
            let p = try DNNL.Primitive(reorderFrom: desc, to: desc)
            let out = add(values[value.index].shape, desc)
            ops.append(Op(kind: .reorder, primitive: p, input: value, output: out, label: "copy"))
            return out
        }

        /// Average pool with window = stride = `kernel` (PyTorch `AvgPool2d(kernel)`); the
        /// sides must be multiples of `kernel`.
        public func averagePool(_ x: Value, kernel: Int, label: String = "avgpool") throws -> Value {
            try Threads.with(threads) { try addAveragePool(x, kernel: kernel, label: label) }
        }

        private func addAveragePool(_ x: Value, kernel: Int, label: String) throws -> Value {
            let s = shape(x)
            guard kernel >= 1, s.height % kernel == 0, s.width % kernel == 0 else {
                throw LightCapError.invalidArgument(reason: "\(label): \(s.height)x\(s.width) is not a multiple of \(kernel)")
            }
            if kernel == 1 { return x }
            let desc = values[x.index].desc
            let p = try DNNL.averagePool(src: desc, channels: s.channels, height: s.height, width: s.width, kernel: kernel)
            let outShape = Shape(channels: s.channels, height: s.height / kernel, width: s.width / kernel)
            // LightCap's pool where the input is in one of its layouts (and not the network's
            // input, which has no buffer of its own): the output keeps that layout.
            if algorithm != .directOneDNN && x.index != 0, let layout = try ChannelLayout.of(desc, s) {
                let pool = try AveragePool(channels: s.channels, height: s.height, width: s.width, kernel: kernel, layout: layout)
                let out = add(outShape, try DNNL.desc([1, s.channels, outShape.height, outShape.width], layout.dnnl))
                ops.append(Op(kind: .lightcapPool(pool), primitive: p, input: x, output: out, label: label))
                return out
            }
            let out = add(outShape, p.dstDesc)
            ops.append(Op(kind: .pool, primitive: p, input: x, output: out, label: label))
            return out
        }

        /// The finished network producing `output`.
        public func build(output: Value) throws -> ConvolutionNetwork {
            try Threads.with(threads) { try ConvolutionNetwork(builder: self, output: output) }
        }
    }
}
