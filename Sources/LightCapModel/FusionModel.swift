// The fusion model (docs/FORMAT.md, computation 6-9 and 13): image projection, the OSCAR-style
// input layout and attention mask, and a post-LN BERT encoder (Hugging Face names under `bert.`).
//
// Two ways to run it:
//   - `encode(_:mask:)`: the whole sequence [caption segment; concept segment; visual tokens] with
//     the additive mask, every hidden state returned (the reference twin, and the uncached decoder);
//   - `imageCache(...)` once per image, then `step(...)` per decoding step: concept and visual
//     rows never see the caption, so their keys/values are computed once; each step runs only the
//     token just chosen and the new [MASK] (two rows per hypothesis) against the cached keys.
// Blocked keys get -10000 in both ways; exp(-10000) is exactly 0 in Float, so leaving blocked
// keys out (the cached way) changes nothing but the order of a few additions.

import LightCapCore

/// Additive mask value of a blocked key (Hugging Face's extended mask).
public let attentionMaskBlocked: Float = -10000

/// Ids of the special tokens in the fusion vocabulary.
public struct SpecialTokenIDs: Sendable, Equatable {
    public var cls: Int, sep: Int, mask: Int, pad: Int

    public init(cls: Int, sep: Int, mask: Int, pad: Int) {
        self.cls = cls
        self.sep = sep
        self.mask = mask
        self.pad = pad
    }
}

/// The text part of one fusion input and its attention mask (docs/FORMAT.md 7-8).
public struct FusionInput: Sendable {
    /// Caption segment (padded to `captionSegmentLength`) then concept segment: [T].
    public var tokenIDs: [Int]
    /// 0 for the caption segment, 1 for the concept segment: [T].
    public var typeIDs: [Int]
    /// 0 ..< T: [T].
    public var positionIDs: [Int]
    /// Additive mask [T + N, T + N] (0 seen, -10000 blocked).
    public var mask: Tensor
    /// Caption segment length A.
    public var captionSegmentLength: Int

    /// Lays out `[CLS] caption... (+ [MASK])` padded with [PAD] to `captionSegmentLength`, then the
    /// concept pieces and [SEP], then `visualCount` visual tokens.
    /// - Parameters:
    ///   - captionSegment: the caption segment's tokens before padding, e.g. `[CLS] t1..tk [MASK]`.
    ///   - conceptPieces: WordPiece ids of the kept concepts in score order, concatenated (no [SEP]),
    ///     or nil when the model has no concept segment.
    public static func build(captionSegment: [Int], conceptPieces: [Int]?, special: SpecialTokenIDs,
                             captionSegmentLength a: Int, visualCount n: Int,
                             maxPositions: Int) throws -> FusionInput {
        guard captionSegment.count <= a else {
            throw LightCapError.invalidArgument(reason: "caption segment of \(captionSegment.count) tokens exceeds caption_segment_length \(a)")
        }
        var tokens = captionSegment + Array(repeating: special.pad, count: a - captionSegment.count)
        if let conceptPieces { tokens += conceptPieces + [special.sep] }
        let t = tokens.count
        guard t <= maxPositions else {
            throw LightCapError.invalidArgument(reason: "text of \(t) tokens exceeds max_position_embeddings \(maxPositions)")
        }
        let total = t + n
        var mask = Tensor(zeros: [total, total])
        mask.withUnsafeMutableBufferPointer { m in
            for i in 0..<total {
                for j in 0..<total {
                    let keyIsCaption = j < a
                    var allowed = i < a ? (!keyIsCaption || j <= i) : !keyIsCaption
                    if j < t && tokens[j] == special.pad { allowed = false }
                    if !allowed { m[i * total + j] = attentionMaskBlocked }
                }
            }
        }
        return FusionInput(tokenIDs: tokens, typeIDs: (0..<t).map { $0 < a ? 0 : 1 },
                           positionIDs: Array(0..<t), mask: mask, captionSegmentLength: a)
    }
}

/// Visual tokens: `LayerNorm(dense(grid))`, or `LayerNorm(dense(grid) + P)` with a learned
/// position embedding `P` [N, D] per grid cell when `fusion.visual_position_embeddings` is on.
/// Weights: `image_projection.{dense,LayerNorm}` (+ `position_embeddings`).
public struct ImageProjection: Sendable {
    let dense: Linear
    let norm: LayerNorm
    let positions: Tensor?  // [N, D]

    /// Loads the projection from the `image_projection` scope.
    public init(_ store: WeightStore, configuration: Configuration) throws {
        let d = configuration.fusion.hiddenSize
        dense = try Linear(store.scoped("dense"), inFeatures: configuration.gridChannels, outFeatures: d)
        norm = try LayerNorm(store.scoped("LayerNorm"), size: d, eps: configuration.fusion.layerNormEps)
        positions = configuration.fusion.visualPositionEmbeddings
            ? try store.take("position_embeddings", shape: [configuration.visualTokens, d]) : nil
    }

    /// [N, C] -> [N, D].
    public func callAsFunction(_ grid: Tensor) -> Tensor {
        var y = dense(grid)  // [N, D]
        if let positions {
            precondition(positions.shape == y.shape, "ImageProjection: \(y.shape) tokens, positions \(positions.shape)")
            positions.withUnsafeBufferPointer { p in
                y.withUnsafeMutableBufferPointer { out in
                    for i in out.indices { out[i] += p[i] }
                }
            }
        }
        return norm(y)
    }
}

/// One post-LN BERT layer. Query, key and value are packed into one [3D, D] product.
struct BertLayer: Sendable {
    let qkv: Linear  // [3D, D]
    let attentionOutput: Linear  // [D, D]
    let attentionNorm: LayerNorm
    let intermediate: Linear  // [I, D]
    let output: Linear  // [D, I]
    let outputNorm: LayerNorm
    let heads: Int
    /// The four products as a decoding step runs them.
    var step: StepProducts

    struct StepProducts: Sendable {
        let qkv: any RowLinear & Sendable, attentionOutput: any RowLinear & Sendable
        let intermediate: any RowLinear & Sendable, output: any RowLinear & Sendable
    }

    init(_ store: WeightStore, fusion f: Configuration.Fusion, stepWeights: FusionWeights) throws {
        let d = f.hiddenSize
        let attention = store.scoped("attention")
        let selfScope = attention.scoped("self")
        var weights: [Float] = [], biases: [Float] = []
        for name in ["query", "key", "value"] {
            let s = selfScope.scoped(name)
            weights += try s.take("weight", shape: [d, d]).scalars
            biases += try s.take("bias", shape: [d]).scalars
            s.releasePages(of: "weight")
        }
        qkv = try Linear(weight: Tensor(shape: [3 * d, d], scalars: weights), bias: Tensor(shape: [3 * d], scalars: biases))
        attentionOutput = try Linear(attention.scoped("output").scoped("dense"), inFeatures: d, outFeatures: d)
        attentionNorm = try LayerNorm(attention.scoped("output").scoped("LayerNorm"), size: d, eps: f.layerNormEps)
        intermediate = try Linear(store.scoped("intermediate").scoped("dense"), inFeatures: d, outFeatures: f.intermediateSize)
        output = try Linear(store.scoped("output").scoped("dense"), inFeatures: f.intermediateSize, outFeatures: d)
        outputNorm = try LayerNorm(store.scoped("output").scoped("LayerNorm"), size: d, eps: f.layerNormEps)
        heads = f.numAttentionHeads
        switch stepWeights {
        case .f32:
            step = StepProducts(qkv: qkv, attentionOutput: attentionOutput, intermediate: intermediate, output: output)
        case .int8:
            step = StepProducts(qkv: Int8Linear(qkv), attentionOutput: Int8Linear(attentionOutput),
                                intermediate: Int8Linear(intermediate), output: Int8Linear(output))
        }
    }

    var hiddenSize: Int { attentionOutput.outFeatures }

    /// Attention output + FFN on `context` [M, D] with residual `x` [M, D]; `step`: through the
    /// decoding step's products.
    func finish(context: Tensor, residual x: Tensor, step isStep: Bool = false) -> Tensor {
        var attended = isStep ? step.attentionOutput(context) : attentionOutput(context)
        add(&attended, x)
        attended = attentionNorm(attended)
        var h = isStep ? step.intermediate(attended) : intermediate(attended)
        h.withUnsafeMutableBufferPointer { FastMath.gelu(inPlace: $0) }
        var out = isStep ? step.output(h) : output(h)
        add(&out, attended)
        return outputNorm(out)
    }

    /// The whole layer on x [L, D] with an additive mask [L, L] (or none).
    func forward(_ x: Tensor, mask: Tensor?) -> Tensor {
        forwardKeepingProjections(x, mask: mask).output
    }

    /// The layer and its query/key/value projections [L, 3D].
    func forwardKeepingProjections(_ x: Tensor, mask: Tensor?) -> (output: Tensor, qkv: Tensor) {
        let d = hiddenSize, rows = x.shape[0]
        let qkvOut = qkv(x)  // [L, 3D]
        var context = Tensor(zeros: [rows, d])
        var scratch = [Float](repeating: 0, count: rows * rows)
        qkvOut.withUnsafeBufferPointer { p in
            context.withUnsafeMutableBufferPointer { c in
                scratch.withUnsafeMutableBufferPointer { s in
                    let base = p.baseAddress!
                    func run(_ m: UnsafePointer<Float>?) {
                        Attention.multiHead(query: base, queryStride: 3 * d, key: base + d, keyStride: 3 * d,
                                            value: base + 2 * d, valueStride: 3 * d, tq: rows, tk: rows,
                                            heads: heads, headDim: d / heads, mask: m,
                                            scratch: s.baseAddress!, output: c.baseAddress!)
                    }
                    if let mask { mask.withUnsafeBufferPointer { run($0.baseAddress!) } } else { run(nil) }
                }
            }
        }
        return (finish(context: context, residual: x), qkvOut)
    }
}

/// x += y (same count).
@inline(__always)
func add(_ x: inout Tensor, _ y: Tensor) {
    y.withUnsafeBufferPointer { b in
        x.withUnsafeMutableBufferPointer { a in
            for i in 0..<a.count { a[i] += b[i] }
        }
    }
}

/// Keys and values of the concept + visual rows at every layer, computed once per image.
public struct ImageCache: Sendable {
    /// Per layer, [P, D] keys and values of the P concept + visual rows.
    var keys: [Tensor], values: [Tensor]
    /// P.
    public var count: Int { keys.first?.shape[0] ?? 0 }
}

/// Keys and values one hypothesis attends to at every layer: the image rows (concept + visual,
/// shared by every hypothesis of the image, never copied) followed by the caption rows computed
/// so far ([CLS] and its tokens), which are its own.
public struct CaptionCache: Sendable {
    /// The image rows.
    let image: ImageCache
    /// Per layer, row-major [count, D]: the caption rows.
    var keys: [[Float]], values: [[Float]]
    /// Number of image rows before the caption rows.
    var imageRows: Int { image.count }
    /// Number of caption positions held (0 before the first step).
    public private(set) var count: Int

    /// A cache holding only the image rows of `image`.
    public init(image: ImageCache) {
        self.image = image
        keys = Array(repeating: [], count: image.keys.count)
        values = Array(repeating: [], count: image.values.count)
        count = 0
    }

    /// Appends one caption position's key and value at every layer (from `rows`, layer l at
    /// `keyRows[l]` / `valueRows[l]`).
    mutating func appendPosition(keys newKeys: [UnsafePointer<Float>], values newValues: [UnsafePointer<Float>], width: Int) {
        for l in keys.indices {
            keys[l].append(contentsOf: UnsafeBufferPointer(start: newKeys[l], count: width))
            values[l].append(contentsOf: UnsafeBufferPointer(start: newValues[l], count: width))
        }
        count += 1
    }
}

/// The BERT fusion model (no pooler). Weights under `bert.`.
public struct FusionModel: Sendable {
    public let configuration: Configuration.Fusion
    /// [V, D]: the word embeddings, also the heads' tied decoder.
    public let wordEmbeddings: Tensor
    let positionEmbeddings: Tensor  // [P, D]
    let tokenTypeEmbeddings: Tensor  // [2, D]
    let embeddingNorm: LayerNorm
    var layers: [BertLayer]
    /// What a decoding step's layers read.
    public let stepWeights: FusionWeights

    /// Loads the model from the `bert` scope; `stepWeights`: what a decoding step's layers read.
    public init(_ store: WeightStore, configuration: Configuration, stepWeights: FusionWeights = .f32) throws {
        let f = configuration.fusion, d = f.hiddenSize
        let e = store.scoped("embeddings")
        // One owned copy, shared with the heads' tied decoder (its row-major plain copy and the
        // INT8 path's exact rows): the file's pages are dropped.
        wordEmbeddings = try e.take("word_embeddings.weight", shape: [f.vocabSize, d]).owned()
        e.releasePages(of: "word_embeddings.weight")
        positionEmbeddings = try e.take("position_embeddings.weight", shape: [f.maxPositionEmbeddings, d]).owned()
        tokenTypeEmbeddings = try e.take("token_type_embeddings.weight", shape: [f.typeVocabSize, d]).owned()
        embeddingNorm = try LayerNorm(e.scoped("LayerNorm"), size: d, eps: f.layerNormEps)
        let encoder = store.scoped("encoder").scoped("layer")
        layers = try (0..<f.numHiddenLayers).map { try BertLayer(encoder.scoped($0), fusion: f, stepWeights: stepWeights) }
        self.stepWeights = stepWeights
        self.configuration = f
    }

    /// This model with every INT8 step product replaced by its plain twin, the F32 layer over
    /// the rounded weights (`Int8Linear.dequantized`): the tests' reference for `.int8`.
    func dequantizedStepTwin() -> FusionModel {
        var twin = self
        for l in twin.layers.indices {
            let s = twin.layers[l].step
            func plain(_ p: any RowLinear & Sendable) -> any RowLinear & Sendable { (p as? Int8Linear)?.dequantized ?? p }
            twin.layers[l].step = BertLayer.StepProducts(qkv: plain(s.qkv), attentionOutput: plain(s.attentionOutput),
                                                         intermediate: plain(s.intermediate), output: plain(s.output))
        }
        return twin
    }

    /// Hidden size D.
    public var hiddenSize: Int { configuration.hiddenSize }
    /// Number of layers.
    public var layerCount: Int { layers.count }

    /// LayerNorm(word + position + token type) of each text token: [T, D].
    public func embed(tokens: [Int], types: [Int], positions: [Int]) throws -> Tensor {
        let d = hiddenSize, f = configuration
        precondition(tokens.count == types.count && tokens.count == positions.count, "FusionModel.embed: lengths differ")
        for (i, t) in tokens.enumerated() {
            guard t >= 0 && t < f.vocabSize else {
                throw LightCapError.invalidArgument(reason: "token id \(t) at \(i) is outside the vocabulary of \(f.vocabSize)")
            }
            guard positions[i] >= 0 && positions[i] < f.maxPositionEmbeddings else {
                throw LightCapError.invalidArgument(reason: "position \(positions[i]) is outside max_position_embeddings \(f.maxPositionEmbeddings)")
            }
            guard types[i] >= 0 && types[i] < f.typeVocabSize else {
                throw LightCapError.invalidArgument(reason: "token type \(types[i]) is outside type_vocab_size \(f.typeVocabSize)")
            }
        }
        var out = Tensor(zeros: [tokens.count, d])
        wordEmbeddings.withUnsafeBufferPointer { w in
            positionEmbeddings.withUnsafeBufferPointer { p in
                tokenTypeEmbeddings.withUnsafeBufferPointer { t in
                    out.withUnsafeMutableBufferPointer { o in
                        for i in tokens.indices {
                            let (wr, pr, tr) = (tokens[i] * d, positions[i] * d, types[i] * d)
                            for k in 0..<d { o[i * d + k] = w[wr + k] + p[pr + k] + t[tr + k] }
                        }
                    }
                }
            }
        }
        return embeddingNorm(out)
    }

    /// Mean word embedding of each concept's WordPiece ids: [k, D].
    public func meanWordEmbeddings(_ pieces: [[Int]]) -> Tensor {
        let d = hiddenSize
        var out = Tensor(zeros: [pieces.count, d])
        wordEmbeddings.withUnsafeBufferPointer { w in
            out.withUnsafeMutableBufferPointer { o in
                for (i, ids) in pieces.enumerated() {
                    for id in ids { for k in 0..<d { o[i * d + k] += w[id * d + k] } }
                    let n = Float(max(ids.count, 1))
                    for k in 0..<d { o[i * d + k] /= n }
                }
            }
        }
        return out
    }

    /// Text embeddings of `input` followed by `visualTokens` [N, D]: the encoder's input [T + N, D].
    public func inputEmbeddings(_ input: FusionInput, visualTokens: Tensor) throws -> Tensor {
        let text = try embed(tokens: input.tokenIDs, types: input.typeIDs, positions: input.positionIDs)
        return concatenateRows(text, visualTokens)
    }

    /// Every hidden state: [0] the input, [l] after layer l. x [L, D], mask [L, L].
    public func encode(_ x: Tensor, mask: Tensor?) -> [Tensor] {
        var states = [x]
        var h = x
        for layer in layers {
            h = layer.forward(h, mask: mask)
            states.append(h)
        }
        return states
    }

    // MARK: - Cached decoding

    /// Runs the concept segment (`conceptTokens`: pieces + [SEP], positions from
    /// `captionSegmentLength`, type 1; empty for a model without concepts) and the visual tokens
    /// through every layer once, keeping each layer's keys and values. These rows see each other
    /// and never the caption.
    public func imageCache(conceptTokens: [Int], visualTokens: Tensor, captionSegmentLength a: Int) throws -> ImageCache {
        var h = visualTokens
        if !conceptTokens.isEmpty {
            let text = try embed(tokens: conceptTokens, types: Array(repeating: 1, count: conceptTokens.count),
                                 positions: conceptTokens.indices.map { a + $0 })
            h = concatenateRows(text, visualTokens)
        }
        let d = hiddenSize
        var keys: [Tensor] = [], values: [Tensor] = []
        for (l, layer) in layers.enumerated() {
            if l == layers.count - 1 {
                // Nobody reads these rows' last outputs: the last layer only needs their keys/values.
                let qkvOut = layer.qkv(h)
                keys.append(columns(qkvOut, from: d, width: d))
                values.append(columns(qkvOut, from: 2 * d, width: d))
                break
            }
            let (out, qkvOut) = layer.forwardKeepingProjections(h, mask: nil)
            keys.append(columns(qkvOut, from: d, width: d))
            values.append(columns(qkvOut, from: 2 * d, width: d))
            h = out
        }
        return ImageCache(keys: keys, values: values)
    }

    /// One decoding step for several hypotheses. Hypothesis i holds `caches[i]` (caption positions
    /// 0 ..< c after the image rows) and adds the token just chosen, `tokens[i]`, at position c,
    /// then a [MASK] at c + 1. Returns the final hidden state of each [MASK] row [H, D] and the
    /// caches grown by position c (pass caches nobody else holds: they then grow in place).
    public func step(caches: consuming [CaptionCache], tokens: [Int], maskID: Int) throws
        -> (hidden: Tensor, caches: [CaptionCache]) {
        precondition(caches.count == tokens.count, "FusionModel.step: caches and tokens differ")
        let d = hiddenSize, hyps = caches.count, heads = configuration.numAttentionHeads
        var rowsTokens: [Int] = [], rowsPositions: [Int] = []
        for (cache, token) in zip(caches, tokens) {
            rowsTokens += [token, maskID]
            rowsPositions += [cache.count, cache.count + 1]
        }
        var h = try embed(tokens: rowsTokens, types: Array(repeating: 0, count: rowsTokens.count), positions: rowsPositions)
        var grown = consume caches
        // Per hypothesis and layer, the new rows' keys/values (row 0 is kept in the cache).
        var kept = [[Float]](repeating: [], count: hyps)
        var keptValues = [[Float]](repeating: [], count: hyps)
        var scratch = [Float]()
        for (l, layer) in layers.enumerated() {
            let qkvOut = layer.step.qkv(h)  // [2H, 3D]
            var context = Tensor(zeros: [2 * hyps, d])
            qkvOut.withUnsafeBufferPointer { q in
                context.withUnsafeMutableBufferPointer { ctx in
                    for i in 0..<hyps {
                        let base = q.baseAddress! + 2 * i * 3 * d
                        let tk = grown[i].imageRows + grown[i].count + 2
                        // Keys/values: the image rows, then the cached caption rows and the two new ones.
                        for r in 0..<2 {
                            grown[i].keys[l].append(contentsOf: UnsafeBufferPointer(start: base + r * 3 * d + d, count: d))
                            grown[i].values[l].append(contentsOf: UnsafeBufferPointer(start: base + r * 3 * d + 2 * d, count: d))
                        }
                        kept[i] += UnsafeBufferPointer(start: base + d, count: d)
                        keptValues[i] += UnsafeBufferPointer(start: base + 2 * d, count: d)
                        // The chosen token (row 0) does not see the [MASK] after it.
                        var mask = [Float](repeating: 0, count: 2 * tk)
                        mask[tk - 1] = attentionMaskBlocked
                        if scratch.count < 2 * tk { scratch = [Float](repeating: 0, count: 2 * tk) }
                        let image = grown[i].image
                        image.keys[l].withUnsafeBufferPointer { ik in
                            image.values[l].withUnsafeBufferPointer { iv in
                                grown[i].keys[l].withUnsafeBufferPointer { kb in
                                    grown[i].values[l].withUnsafeBufferPointer { vb in
                                        mask.withUnsafeBufferPointer { m in
                                            scratch.withUnsafeMutableBufferPointer { s in
                                                Attention.fewQueries(query: base, queryStride: 3 * d, tq: 2,
                                                                     first: (ik.baseAddress!, iv.baseAddress!, image.count),
                                                                     then: (kb.baseAddress!, vb.baseAddress!, grown[i].count + 2),
                                                                     heads: heads, headDim: d / heads, mask: m.baseAddress!,
                                                                     scratch: s.baseAddress!, output: ctx.baseAddress! + 2 * i * d)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        // Drop the two new rows again; position c is appended to every layer below.
                        grown[i].keys[l].removeLast(2 * d)
                        grown[i].values[l].removeLast(2 * d)
                    }
                }
            }
            h = layer.finish(context: context, residual: h, step: true)
        }
        for i in 0..<hyps {
            kept[i].withUnsafeBufferPointer { k in
                keptValues[i].withUnsafeBufferPointer { v in
                    grown[i].appendPosition(keys: (0..<layers.count).map { k.baseAddress! + $0 * d },
                                            values: (0..<layers.count).map { v.baseAddress! + $0 * d }, width: d)
                }
            }
        }
        // Rows 1, 3, 5, ...: the [MASK] of each hypothesis.
        var out = Tensor(zeros: [hyps, d])
        h.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<hyps { (dst.baseAddress! + i * d).update(from: src.baseAddress! + (2 * i + 1) * d, count: d) }
            }
        }
        return (out, grown)
    }
}

/// Rows of `a` then rows of `b` (same width).
func concatenateRows(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape.last == b.shape.last, "concatenateRows: widths \(a.shape) and \(b.shape) differ")
    let width = a.shape.last ?? 0
    let out = Tensor(zeros: [a.shape[0] + b.shape[0], width])
    a.withUnsafeBufferPointer { out.storage.base.update(from: $0.baseAddress!, count: $0.count) }
    b.withUnsafeBufferPointer { (out.storage.base + a.count).update(from: $0.baseAddress!, count: $0.count) }
    return out
}

/// Columns `from ..< from + width` of a [M, K] tensor: [M, width].
func columns(_ x: Tensor, from: Int, width: Int) -> Tensor {
    let (m, k) = (x.shape[0], x.shape[1])
    let out = Tensor(zeros: [m, width])
    x.withUnsafeBufferPointer { p in
        for r in 0..<m { (out.storage.base + r * width).update(from: p.baseAddress! + r * k + from, count: width) }
    }
    return out
}
