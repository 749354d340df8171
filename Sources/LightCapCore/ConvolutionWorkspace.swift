// ConvolutionWorkspace: what one caller of a ConvolutionNetwork runs it with (activation
// buffers, oneDNN memory objects and stream, the prepared calls of every op), and the per-op
// profile that times those calls.

import CDNNL
import Dispatch

extension ConvolutionNetwork {
    /// Per-caller buffers, memory objects and stream. Not shared between threads.
    public final class Workspace {
        let network: ConvolutionNetwork
        let buffers: [DNNL.Buffer]
        let scratchpad: DNNL.Buffer
        let stream: DNNL.Stream
        let memories: [DNNL.Memory?]
        let inputMemory: DNNL.Memory
        let outputMemory: DNNL.Memory
        /// LightCap's Winograd ops' transformed inputs and products (the largest of any op).
        let winogradInput: DNNL.Buffer
        let winogradProducts: DNNL.Buffer
        /// The zero-padded input copy of LightCap's direct kernel (the largest of any op).
        let directScratch: DNNL.Buffer
        var keep: [DNNL.Memory] = []
        /// One per op, in order.
        var calls: [Call] = []

        /// An op with its buffers and arguments bound.
        enum Call {
            case primitive(DNNL.Primitive, DNNL.Arguments)
            case lightcapWinograd(WinogradConvolution, src: UnsafeMutableRawPointer, dst: UnsafeMutableRawPointer, DNNL.Arguments)
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
                case .lightcapWinograd(let w, _):
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
                case .oneDNNConvolution(let w, let b, _, _):
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
                case .lightcapWinograd(let w, _):
                    // Never the network's input (value 0 has no buffer): the builder copies it first.
                    let (src, dst) = (buffer(op.input), buffer(op.output))
                    let margs = try w.arguments(v: winogradInput.pointer, m: winogradProducts.pointer,
                                                scratchpad: scratchpad.pointer, keep: &keep)
                    calls.append(.lightcapWinograd(w, src: src, dst: dst, margs))
                    continue
                case .lightcapDirect(let d, _, _):
                    // Never the network's input either (the builder copies it first).
                    calls.append(.lightcapDirect(d, src: buffer(op.input), dst: buffer(op.output)))
                    continue
                case .lightcapPool(let p):
                    // Never the network's input (KernelChoice leaves that to oneDNN), nor its
                    // output's slot (the output reorder comes after).
                    calls.append(.lightcapPool(p, src: buffer(op.input), dst: buffer(op.output)))
                    continue
                case .oneDNNPool, .reorder:
                    args.append(.src, memories[op.input.index]!)
                    args.append(.dst, i == network.ops.count - 1 ? outputMemory : memories[op.output.index]!)
                }
                calls.append(.primitive(op.primitive, args))
            }
        }

        /// Runs one call on the network's threads (the caller has set them). LightCap's kernels
        /// first wait for the oneDNN work queued before them.
        func execute(_ call: Call) throws {
            let threads = network.threads
            switch call {
            case .primitive(let primitive, let args):
                try primitive.execute(stream, args)
            case .lightcapWinograd(let w, let src, let dst, let args):
                stream.wait()
                try w.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self),
                          v: winogradInput.pointer.assumingMemoryBound(to: Float.self),
                          m: winogradProducts.pointer.assumingMemoryBound(to: Float.self),
                          arguments: args, stream: stream, threads: threads)
            case .lightcapDirect(let d, let src, let dst):
                stream.wait()
                d.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self),
                      scratch: directScratch.pointer.assumingMemoryBound(to: Float.self), threads: threads)
            case .lightcapPool(let p, let src, let dst):
                stream.wait()
                p.run(src: src.assumingMemoryBound(to: Float.self), dst: dst.assumingMemoryBound(to: Float.self), threads: threads)
            }
        }
    }

    /// A workspace for `run` (reuse it across calls on one thread).
    public func makeWorkspace() throws -> Workspace { try Workspace(self) }

    /// The time of one op of the network (`profile`).
    public struct OpTime: Codable, Sendable {
        public let label: String
        /// The implementation: oneDNN's name or the LightCap kernel's.
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
                    try workspace.execute(call)
                    workspace.stream.wait()
                    if run > 0 { samples[i].append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
                }
            }
        }
        return zip(ops, samples).map { op, times in
            OpTime(label: op.label, implementation: op.implementation, flops: op.flops, samples: times)
        }
    }

    /// Runs the network once on `input`, as `run` does, and shows `visit` the input of each F32
    /// convolution before it runs (its label and values, in the layout the kernel reads), in
    /// order: what INT8 calibration measures. Blocked layouts' padding channels hold zeros,
    /// which are among the values.
    public func visitConvolutionInputs(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, workspace: Workspace,
                                       _ visit: (String, UnsafeBufferPointer<Float>) throws -> Void) throws {
        guard workspace.network === self else {
            throw LightCapError.invalidArgument(reason: "the workspace belongs to another network")
        }
        try workspace.inputMemory.setPointer(UnsafeMutableRawPointer(mutating: input))
        try workspace.outputMemory.setPointer(UnsafeMutableRawPointer(output))
        try Threads.with(threads) {
            for (op, call) in zip(ops, workspace.calls) {
                if op.flops > 0 && values[op.input.index].desc.data_type == dnnl_f32 {
                    workspace.stream.wait()
                    let inputValues = op.input.index == 0
                        ? UnsafeBufferPointer(start: input, count: inputShape.count)
                        : UnsafeBufferPointer(start: workspace.buffers[slots[op.input.index]].pointer.assumingMemoryBound(to: Float.self),
                                              count: DNNL.bytes(values[op.input.index].desc) / MemoryLayout<Float>.size)
                    try visit(op.label, inputValues)
                }
                try workspace.execute(call)
            }
            workspace.stream.wait()
        }
    }
}
