// CLIPResNet: CLIP's ModifiedResNet image tower (open_clip names under `visual.`).
// pixels [3, S, S] -> stem (3 convs + AvgPool 2) -> layer1..4 of anti-aliased bottlenecks
// -> grid [G*G, C] tokens (row y, column x); optional attention pool -> [output_dim].
// Convolutions run in oneDNN with weights packed once at load (ConvolutionNetwork);
// BatchNorm arrives folded (conv bias) or is folded here when `batchnorm_folded` is false.
// With `visual.quantization` "int8" each convolution whose file has an `input_scale` is a
// QuantizedConv2d (INT8 weights from the file, u8 inputs; `lightcap quantize` writes them:
// TrunkQuantizer.swift), never the stem's first.

import LightCapCore

/// The CLIP ModifiedResNet visual encoder. Read-only after load; share it between threads,
/// give each concurrent caller its own `Workspace`.
public final class CLIPResNet: Sendable {
    /// Input side S.
    public let imageSize: Int
    /// Grid channels C = width * 32.
    public let channels: Int
    /// Grid side G = S / 32.
    public let gridSide: Int
    /// The convolution trunk (stem to layer4).
    public let network: ConvolutionNetwork
    /// CLIP's attention pool, when the file has it.
    public let attentionPool: AttentionPool?
    /// The policy that picked the convolutions' and pools' kernels.
    public let policy: ConvolutionPolicy

    /// A per-caller workspace (activation buffers, oneDNN stream).
    public typealias Workspace = ConvolutionNetwork.Workspace

    /// Loads the tower from `store` (the root scope; keys under `visual.`) for `configuration`,
    /// to run on `threads` oneDNN threads with the kernels the policy `policy` picks. Every
    /// `visual.` key the configuration implies is taken with its exact shape.
    public init(_ store: WeightStore, configuration: Configuration, policy: ConvolutionPolicy = .exact,
                threads: Int = 1) throws {
        let visual = configuration.visual
        imageSize = configuration.image.size
        channels = configuration.gridChannels
        gridSide = configuration.gridSide
        self.policy = policy
        let loader = ConvLoader(store: store.scoped("visual"), folded: visual.batchnormFolded,
                                quantized: visual.quantization == "int8")
        let b = try ConvolutionNetwork.Builder(channels: 3, height: imageSize, width: imageSize, policy: policy,
                                                 threads: threads)
        let layout = CLIPResNetLayout(visual)
        var x = b.input
        for conv in layout.stem { x = try loader.add(b, x, conv) }
        x = try b.averagePool(x, kernel: 2, label: "avgpool")
        for block in layout.blocks {
            var h = try loader.add(b, x, block.conv1)
            h = try loader.add(b, h, block.conv2)
            h = try b.averagePool(h, kernel: block.stride, label: "\(block.name).avgpool")
            var identity = x
            if let downsample = block.downsample {
                let pooled = try b.averagePool(x, kernel: block.stride, label: "\(block.name).downsample.-1")
                identity = try loader.add(b, pooled, downsample, relu: false)
            }
            x = try loader.add(b, h, block.conv3, residual: identity)
        }
        network = try b.build(output: x)
        attentionPool = visual.attentionPool
            ? try AttentionPool(store.scoped("visual").scoped("attnpool"), tokens: gridSide * gridSide, channels: channels,
                                heads: visual.heads, outputDim: visual.outputDim)
            : nil
    }

    /// A new workspace for `grid`.
    public func makeWorkspace() throws -> Workspace { try network.makeWorkspace() }

    /// Writes the grid tokens [G*G, C] of normalised pixels [3, S, S] (CHW) into `grid`.
    public func grid(pixels: UnsafePointer<Float>, into grid: UnsafeMutablePointer<Float>, workspace: Workspace) throws {
        try network.run(input: pixels, output: grid, workspace: workspace)
    }

    /// The grid tokens [G*G, C] of normalised pixels [3, S, S] (CHW, 3*S*S values).
    public func grid(pixels: [Float], workspace: Workspace? = nil) throws -> Tensor {
        guard pixels.count == 3 * imageSize * imageSize else {
            throw LightCapError.invalidArgument(reason: "CLIPResNet expects 3x\(imageSize)x\(imageSize) = \(3 * imageSize * imageSize) pixels, got \(pixels.count)")
        }
        return try network(Tensor(shape: [3, imageSize, imageSize], scalars: pixels), workspace: workspace)
    }

    /// The grid tokens [G*G, C] of a [3, S, S] tensor.
    public func grid(_ pixels: Tensor, workspace: Workspace? = nil) throws -> Tensor {
        guard pixels.shape == [3, imageSize, imageSize] else {
            throw LightCapError.invalidArgument(reason: "CLIPResNet expects pixels [3, \(imageSize), \(imageSize)], got \(pixels.shape)")
        }
        return try network(pixels, workspace: workspace)
    }

    /// CLIP's pooled image embedding [output_dim] from grid tokens (needs the attention pool).
    public func pooled(grid: Tensor) throws -> Tensor {
        guard let attentionPool else {
            throw LightCapError.invalidArgument(reason: "this model has no attention pool (visual.attention_pool is false)")
        }
        return attentionPool(grid)
    }
}

/// Reads one convolution's weights, folding BatchNorm (eps 1e-5) when the file is unfolded; in
/// an INT8 trunk, the INT8 weights, scales and bias of each quantizable convolution that has an
/// `input_scale`.
struct ConvLoader {
    let store: WeightStore
    let folded: Bool
    var quantized = false

    /// Loads convolution `c` (+ its BN), adds it to `builder` (packing its weights), then lets
    /// the file's pages of it go: the packed copy is the only resident one.
    func add(_ builder: ConvolutionNetwork.Builder, _ x: ConvolutionNetwork.Value, _ c: CLIPResNetLayout.Convolution,
             relu: Bool = true, residual: ConvolutionNetwork.Value? = nil) throws -> ConvolutionNetwork.Value {
        let y = quantized && c.quantizable && store.contains("\(c.name).input_scale")
            ? try builder.convolution(x, try quantizedConv(c), relu: relu, residual: residual, label: c.name)
            : try builder.convolution(x, try conv(c), relu: relu, residual: residual, label: c.name)
        store.releasePages(of: "\(c.name).weight")
        return y
    }

    /// The INT8 convolution `c`: `weight` (I8), `weight_scale` [out], `bias` [out], `input_scale` [1].
    func quantizedConv(_ c: CLIPResNetLayout.Convolution) throws -> QuantizedConv2d {
        let shape = [c.outChannels, c.inChannels, c.kernel, c.kernel]
        let weight = try store.takeInt8("\(c.name).weight", shape: shape)
        let scales = try store.take("\(c.name).weight_scale", shape: [c.outChannels]).scalars
        let bias = try store.take("\(c.name).bias", shape: [c.outChannels])
        let inputScale = try store.take("\(c.name).input_scale", shape: [1]).scalars[0]
        do {
            return try QuantizedConv2d(weight: weight, shape: shape, weightScales: scales, bias: bias, inputScale: inputScale,
                                       stride: c.stride, padding: c.padding)
        } catch LightCapError.invalidArgument(let reason) {
            throw LightCapError.invalidArgument(reason: "\(store.fullKey(c.name)): \(reason)")
        }
    }

    func conv(_ c: CLIPResNetLayout.Convolution) throws -> Conv2d {
        let weight = try store.take("\(c.name).weight", shape: [c.outChannels, c.inChannels, c.kernel, c.kernel])
        if folded {
            let bias = try store.take("\(c.name).bias", shape: [c.outChannels])
            return try Conv2d(weight: weight, bias: bias, stride: c.stride, padding: c.padding)
        }
        let (w, b) = try ConvLoader.fold(weight: weight, batchNorm: store.scoped(c.batchNorm), channels: c.outChannels)
        return try Conv2d(weight: w, bias: b, stride: c.stride, padding: c.padding)
    }

    /// W' = W * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps), per output channel.
    static func fold(weight: Tensor, batchNorm bn: WeightStore, channels: Int, eps: Double = 1e-5) throws -> (Tensor, Tensor) {
        let gamma = try bn.take("weight", shape: [channels]).scalars
        let beta = try bn.take("bias", shape: [channels]).scalars
        let mean = try bn.take("running_mean", shape: [channels]).scalars
        let variance = try bn.take("running_var", shape: [channels]).scalars
        if let bad = variance.firstIndex(where: { $0 < 0 }) {
            throw LightCapError.invalidArgument(reason: "tensor '\(bn.fullKey("running_var"))' has a negative variance at index \(bad)")
        }
        let per = weight.count / channels
        var w = weight.owned()
        var bias = [Float](repeating: 0, count: channels)
        w.withUnsafeMutableBufferPointer { p in
            for o in 0..<channels {
                let scale = Double(gamma[o]) / (Double(variance[o]) + eps).squareRoot()
                for i in 0..<per { p[o * per + i] = Float(Double(p[o * per + i]) * scale) }
                bias[o] = Float(Double(beta[o]) - Double(mean[o]) * scale)
            }
        }
        return (w, Tensor(shape: [channels], scalars: bias))
    }
}

/// CLIP's attention pool: the mean grid token (plus positional embedding) attends over
/// [mean; grid] + positional embedding with `heads` heads, then `c_proj`.
public struct AttentionPool: Sendable {
    public let heads: Int
    /// [(N+1), C].
    public let positionalEmbedding: Tensor
    public let q: Linear, k: Linear, v: Linear, c: Linear

    /// Loads `positional_embedding` and `{q,k,v,c}_proj` from `store` (scope `visual.attnpool`).
    public init(_ store: WeightStore, tokens: Int, channels: Int, heads: Int, outputDim: Int) throws {
        self.heads = heads
        positionalEmbedding = try store.take("positional_embedding", shape: [tokens + 1, channels]).owned()
        q = try Linear(store.scoped("q_proj"), inFeatures: channels, outFeatures: channels)
        k = try Linear(store.scoped("k_proj"), inFeatures: channels, outFeatures: channels)
        v = try Linear(store.scoped("v_proj"), inFeatures: channels, outFeatures: channels)
        c = try Linear(store.scoped("c_proj"), inFeatures: channels, outFeatures: outputDim)
    }

    /// grid [N, C] -> [output_dim].
    public func callAsFunction(_ grid: Tensor) -> Tensor {
        let (n, ch) = (grid.shape[0], grid.shape[1])
        var tokens = Tensor(zeros: [n + 1, ch])  // [N+1, C]: mean token, then the grid
        grid.withUnsafeBufferPointer { g in
            positionalEmbedding.withUnsafeBufferPointer { pos in
                tokens.withUnsafeMutableBufferPointer { t in
                    for j in 0..<ch {
                        var sum: Float = 0
                        for i in 0..<n { sum += g[i * ch + j] }
                        t[j] = sum / Float(n) + pos[j]
                    }
                    for i in 0..<(n * ch) { t[ch + i] = g[i] + pos[ch + i] }
                }
            }
        }
        let query = q(tokens.rows(0..<1))  // [1, C]
        let attended = Attention.multiHead(query: query, key: k(tokens), value: v(tokens), heads: heads, mask: nil)  // [1, C]
        return c(attended).reshaped([c.outFeatures])
    }
}
