// ConvolutionBuilder: builds a ConvolutionNetwork op by op, each layer by the kernel
// KernelChoice picks for it (oneDNN's or LightCap's), weights packed for that kernel as the
// layer is added, reorders inserted where neighbouring kernels' layouts differ; INT8 layers
// (QuantizedConv2d) as a quantizing reorder plus oneDNN's u8 x s8 convolution.

import CDNNL

extension ConvolutionNetwork {
    /// Builds a network op by op; weights are packed as each convolution is added.
    public final class Builder {
        var ops: [Op] = []
        var values: [ValueInfo] = []
        /// The policy whose kernels `KernelChoice` picks.
        let policy: ConvolutionPolicy
        /// The oneDNN threads the network is built for (`ConvolutionNetwork.threads`).
        public let threads: Int

        /// The network input, [channels, height, width] in CHW layout.
        public let input: Value

        /// A builder for an input of `channels` x `height` x `width`, for a network that runs on
        /// `threads` oneDNN threads, its kernels picked under `policy`.
        public init(channels: Int, height: Int, width: Int, policy: ConvolutionPolicy = .exact, threads: Int = 1) throws {
            guard threads >= 1 else { throw LightCapError.invalidArgument(reason: "threads must be at least 1, got \(threads)") }
            self.policy = policy
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

        private func copy(_ value: Value) throws -> Value {
            let desc = values[value.index].desc
            let p = try DNNL.Primitive(reorderFrom: desc, to: desc)
            let out = add(values[value.index].shape, desc)
            ops.append(Op(kind: .reorder, primitive: p, input: value, output: out, label: "copy"))
            return out
        }

        /// conv(x) + bias, then `+ residual` (if given), then ReLU (if `relu`). The residual's
        /// buffer is reused for the output, so it must not be read afterwards.
        public func convolution(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value? = nil, label: String = "conv") throws -> Value {
            try Threads.with(threads) { try addConvolution(x, conv, relu: relu, residual: residual, label: label) }
        }

        private func addConvolution(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value?, label: String) throws -> Value {
            let s = shape(x)
            let outShape = try outputShape(x, weight: conv.weight.shape, outputSize: conv.outputSize, residual: residual, label: label)
            let primitive = try oneDNNConvolution(s, conv, outShape: outShape, relu: relu, residual: residual != nil, label: label)
            for kernel in KernelChoice.convolution(policy, conv, output: outShape, residual: residual != nil,
                                                   oneDNN: primitive.implementation) {
                switch kernel {
                case .winograd(let tile):
                    if let out = try? addLightCapWinograd(x, conv, relu: relu, outShape: outShape, tile: tile, oneDNN: primitive,
                                                          label: label) {
                        return out
                    }  // else (no fast batched matmul here) the next choice
                case .direct:
                    return try addLightCapDirect(x, conv, relu: relu, residual: residual, outShape: outShape, oneDNN: primitive,
                                                 label: label)
                }
            }
            return try addOneDNNConvolution(x, conv, primitive, residual: residual, outShape: outShape, label: label)
        }

        /// The output shape of a convolution of `x` with a [out, in, k, k] `weight` and output
        /// sides `outputSize(side)`, checked against `x` and `residual`.
        private func outputShape(_ x: Value, weight: [Int], outputSize: (Int) -> Int, residual: Value?,
                                 label: String) throws -> Shape {
            let s = shape(x)
            guard weight[1] == s.channels else {
                throw LightCapError.invalidArgument(reason: "\(label): input has \(s.channels) channels, weight \(weight)")
            }
            let out = Shape(channels: weight[0], height: outputSize(s.height), width: outputSize(s.width))
            guard out.height > 0, out.width > 0 else {
                throw LightCapError.invalidArgument(reason: "\(label): input \(s.height)x\(s.width) too small")
            }
            if let residual, shape(residual) != out {
                throw LightCapError.invalidArgument(reason: "\(label): residual \(shape(residual)) does not match output \(out)")
            }
            return out
        }

        /// The INT8 convolution `conv` of `x` (F32), + bias, then `+ residual` (F32, if given),
        /// then ReLU (if `relu`), as two oneDNN ops: x quantized to u8 at `conv.inputScale` (a
        /// scaling reorder into the convolution's layout), then the u8 x s8 convolution with an
        /// F32 output. Without VNNI the weights are first halved onto 63 levels
        /// (`QuantizedConv2d.forKernels`). The residual's buffer is reused for the output, as in
        /// `convolution`.
        public func convolution(_ x: Value, _ conv: QuantizedConv2d, relu: Bool, residual: Value? = nil,
                                label: String = "conv") throws -> Value {
            try Threads.with(threads) { try addQuantizedConvolution(x, conv, relu: relu, residual: residual, label: label) }
        }

        private func addQuantizedConvolution(_ x: Value, _ stored: QuantizedConv2d, relu: Bool, residual: Value?,
                                             label: String) throws -> Value {
            let conv = try stored.forKernels()
            let s = shape(x)
            let outShape = try outputShape(x, weight: conv.shape, outputSize: conv.outputSize, residual: residual, label: label)
            // dst = (s_x * s_w[o]) * (sum + bias[o] / (s_x * s_w[o])): oneDNN adds the bias before the scale.
            let scales = conv.weightScales.map { $0 * conv.inputScale }
            guard scales.allSatisfy({ $0.isNormal && $0 > 0 }) else {
                throw LightCapError.invalidArgument(reason: "\(label): input scale x weight scale is out of Float's range")
            }
            let primitive = try DNNL.convolutionInt8(inChannels: s.channels, height: s.height, width: s.width,
                                                     outChannels: conv.outChannels, kernel: conv.kernel, stride: conv.stride,
                                                     padding: conv.padding, scales: scales, sum: residual != nil, relu: relu,
                                                     output: dnnl_f32)
            let quantize = try DNNL.Primitive(reorderFrom: values[x.index].desc, to: primitive.srcDesc, scale: 1 / conv.inputScale)
            let q = add(s, primitive.srcDesc)
            ops.append(Op(kind: .reorder, primitive: quantize, input: x, output: q, label: "\(label).quantize"))
            let weights = DNNL.Buffer(bytes: DNNL.bytes(primitive.weightsDesc))
            try conv.weight.withUnsafeBufferPointer {
                try DNNL.reorder(UnsafeRawPointer($0.baseAddress!), try DNNL.desc(conv.shape, dnnl_oihw, type: dnnl_s8),
                                 into: weights.pointer, primitive.weightsDesc)
            }
            var bias = [Float](repeating: 0, count: conv.outChannels)
            if let b = conv.bias { for o in 0..<conv.outChannels { bias[o] = b[flat: o] / scales[o] } }
            let biasBuffer = DNNL.Buffer(copying: Tensor(shape: [conv.outChannels], scalars: bias))
            let (out, residualValue) = try output(outShape, primitive.dstDesc, residual: residual, src: q)
            let flops = 2 * conv.outChannels * conv.inChannels * conv.kernel * conv.kernel * outShape.height * outShape.width
            ops.append(Op(kind: .oneDNNConvolution(weights: weights, bias: biasBuffer, residual: residualValue, flops: flops),
                          primitive: primitive, input: q, output: out, label: label))
            return out
        }

        /// oneDNN's primitive for `conv` on an input of shape `s`, created with the first of
        /// `KernelChoice.oneDNNAlgorithms` it takes.
        private func oneDNNConvolution(_ s: Shape, _ conv: Conv2d, outShape: Shape, relu: Bool, residual: Bool,
                                       label: String) throws -> DNNL.Primitive {
            let algorithms = KernelChoice.oneDNNAlgorithms(policy, conv, output: outShape)
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
                        bias: conv.bias != nil, sum: residual, relu: relu, algorithm: alg,
                        dstLayout: blocked ? .nChw16c : .any)
                    // Without AVX-512 oneDNN has no Winograd kernels and answers with its reference
                    // loop nest (ref:any), far slower than the direct kernel: take the next algorithm.
                    if alg == .winograd && candidate.implementation.hasPrefix("ref") && alg != algorithms.last {
                        lastError = LightCapError.invalidArgument(reason: "\(label): oneDNN has only \(candidate.implementation) for Winograd here")
                        continue
                    }
                    return candidate
                } catch { lastError = error }
            }
            throw lastError!
        }

        /// oneDNN's convolution `primitive` computing the layer, its weights and bias packed
        /// into the primitive's layouts.
        private func addOneDNNConvolution(_ x: Value, _ conv: Conv2d, _ primitive: DNNL.Primitive, residual: Value?,
                                          outShape: Shape, label: String) throws -> Value {
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
            ops.append(Op(kind: .oneDNNConvolution(weights: weights, bias: bias, residual: residualValue,
                                                   flops: conv.flops(outShape)),
                          primitive: primitive, input: src, output: out, label: label))
            return out
        }

        /// A `WinogradConvolution` reading and writing the layouts oneDNN's primitive `oneDNN`
        /// would (so its neighbours need no reorders), nhwc where the transforms can't.
        private func addLightCapWinograd(_ x: Value, _ conv: Conv2d, relu: Bool, outShape: Shape, tile: Int,
                                         oneDNN: DNNL.Primitive, label: String) throws -> Value {
            let s = shape(x)
            let srcLayout = try ChannelLayout(oneDNN.srcDesc, s), dstLayout = try ChannelLayout(oneDNN.dstDesc, outShape)
            let w = try WinogradConvolution(conv, height: s.height, width: s.width, relu: relu,
                                            srcLayout: srcLayout, dstLayout: dstLayout, tile: tile, threads: threads)
            var src = try converted(x, to: try DNNL.desc([1, s.channels, s.height, s.width], srcLayout.dnnl))
            if src.index == 0 { src = try copy(src) }
            let out = add(outShape, try DNNL.desc([1, outShape.channels, outShape.height, outShape.width], dstLayout.dnnl))
            ops.append(Op(kind: .lightcapWinograd(w, flops: conv.flops(outShape)), primitive: w.matmul, input: src, output: out,
                          label: label))
            return out
        }

        /// A `DirectConvolution` reading and writing the layouts oneDNN's primitive `oneDNN`
        /// would (so its neighbours need no reorders), nhwc where those don't fit.
        private func addLightCapDirect(_ x: Value, _ conv: Conv2d, relu: Bool, residual: Value?, outShape: Shape,
                                       oneDNN: DNNL.Primitive, label: String) throws -> Value {
            let s = shape(x)
            let srcLayout = try ChannelLayout(oneDNN.srcDesc, s), dstLayout = try ChannelLayout(oneDNN.dstDesc, outShape)
            let d = try DirectConvolution(conv, height: s.height, width: s.width, relu: relu, residual: residual != nil,
                                          srcLayout: srcLayout, dstLayout: dstLayout, threads: threads)
            var src = try converted(x, to: try DNNL.desc([1, s.channels, s.height, s.width], srcLayout.dnnl))
            if src.index == 0 { src = try copy(src) }
            let dstDesc = try DNNL.desc([1, outShape.channels, outShape.height, outShape.width], dstLayout.dnnl)
            let (out, residualValue) = try output(outShape, dstDesc, residual: residual, src: src)
            ops.append(Op(kind: .lightcapDirect(d, residual: residualValue, flops: conv.flops(outShape)), primitive: oneDNN,
                          input: src, output: out, label: label))
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
            let inputLayout = try ChannelLayout.of(desc, s)
            switch KernelChoice.averagePool(policy, readsNetworkInput: x.index == 0, layout: inputLayout) {
            case .lightcap(let layout):  // the output keeps the input's layout
                let pool = try AveragePool(channels: s.channels, height: s.height, width: s.width, kernel: kernel, layout: layout)
                let out = add(outShape, try DNNL.desc([1, s.channels, outShape.height, outShape.width], layout.dnnl))
                ops.append(Op(kind: .lightcapPool(pool), primitive: p, input: x, output: out, label: label))
                return out
            case .oneDNN:
                let out = add(outShape, p.dstDesc)
                ops.append(Op(kind: .oneDNNPool, primitive: p, input: x, output: out, label: label))
                return out
            }
        }

        /// The finished network producing `output`.
        public func build(output: Value) throws -> ConvolutionNetwork {
            try Threads.with(threads) { try ConvolutionNetwork(builder: self, output: output) }
        }
    }
}
