// Parallel prediction heads (docs/FORMAT.md, computation 10): each head is
// LayerNorm(gelu(dense(x))) followed by the decoder tied to the word embeddings plus its own bias.
// The ensemble is the mean of the heads' logits; since the decoder is shared, that mean is one
// decoder product on the averaged transformed states plus the averaged bias, which is how
// `logits(_:)` computes it. `headLogits(_:)` computes every head apart (the reference twin).
// The decoder product runs on a weight packed once for oneDNN's matmul (PackedLinear: 3x
// sgemm's speed at 1-20 rows); `vocabularyLogitsPlain(transformed:)` is its sgemm twin.

import LightCapCore

/// The ensemble of prediction heads. Weights: `heads.{h}.transform.{dense,LayerNorm}`, `heads.{h}.bias`;
/// the decoder is `bert.embeddings.word_embeddings.weight`.
public struct PredictionHeads: Sendable {
    struct Transform: Sendable {
        let dense: Linear
        let norm: LayerNorm

        func callAsFunction(_ x: Tensor) -> Tensor {
            var h = dense(x)
            h.withUnsafeMutableBufferPointer { FastMath.gelu(inPlace: $0) }
            return norm(h)
        }
    }

    let transforms: [Transform]
    /// Per head [V].
    let biases: [Tensor]
    /// The decoder [V, D] with the averaged bias: owned F32 row-major (`decoder.plain`, also the
    /// embedding rows the INT8 path rescores) and packed once for oneDNN's matmul.
    let decoder: PackedLinear
    /// The same decoder packed as INT8 with exact rescoring of the argmax candidates.
    public let quantizedDecoder: QuantizedDecoder

    /// Loads `count` heads from the `heads` scope; `wordEmbeddings` [V, D] is the tied decoder.
    /// `packF32Decoder` false leaves the F32 decoder unpacked (its calls then run one sgemm on
    /// the row-major rows): for a captioner whose decoding reads the INT8 decoder only, it saves
    /// the packed copy (38 MB at base size) and its packing at load.
    public init(_ store: WeightStore, configuration: Configuration, wordEmbeddings: Tensor, packF32Decoder: Bool = true) throws {
        let f = configuration.fusion, d = f.hiddenSize, v = f.vocabSize
        var transforms: [Transform] = [], biases: [Tensor] = []
        for h in 0..<configuration.heads.count {
            let s = store.scoped(h)
            transforms.append(Transform(
                dense: try Linear(s.scoped("transform").scoped("dense"), inFeatures: d, outFeatures: d),
                norm: try LayerNorm(s.scoped("transform").scoped("LayerNorm"), size: d, eps: f.layerNormEps)))
            biases.append(try s.take("bias", shape: [v]).owned())
        }
        var mean = [Float](repeating: 0, count: v)
        for b in biases { b.withUnsafeBufferPointer { p in for i in 0..<v { mean[i] += p[i] } } }
        let inv = 1 / Float(biases.count)
        for i in 0..<v { mean[i] *= inv }
        self.transforms = transforms
        self.biases = biases
        decoder = try PackedLinear(weight: wordEmbeddings, bias: Tensor(shape: [v], scalars: mean), pack: packF32Decoder)
        quantizedDecoder = QuantizedDecoder(weight: decoder.weight, bias: mean)
    }

    /// Number of heads.
    public var count: Int { transforms.count }
    /// Whether the F32 decoder product runs on a packed copy (`packF32Decoder`).
    public var isF32DecoderPacked: Bool { decoder.isPacked }
    /// Vocabulary size V.
    public var vocabularySize: Int { decoder.outFeatures }

    /// Mean over the heads of the transformed states: x [M, D] -> [M, D].
    public func transformed(_ x: Tensor) -> Tensor {
        var sum = transforms[0](x)
        for t in transforms.dropFirst() { add(&sum, t(x)) }
        let inv = 1 / Float(transforms.count)
        sum.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] *= inv } }
        return sum
    }

    /// Ensemble logits x [M, D] -> [M, V]: one decoder product on the averaged states + averaged bias.
    public func logits(_ x: Tensor) -> Tensor {
        decoder(transformed(x))
    }

    /// The F32 decoder product (+ averaged bias) on already transformed states [M, D] -> [M, V]
    /// (the packed matmul).
    public func vocabularyLogits(transformed states: Tensor) -> Tensor {
        decoder(states)
    }

    /// `vocabularyLogits(transformed:)`'s plain twin: one sgemm on the row-major decoder.
    public func vocabularyLogitsPlain(transformed states: Tensor) -> Tensor {
        decoder.plain(states)
    }

    /// Ensemble logits through the INT8 decoder: exact for every token that could be a row's
    /// argmax, within a bound elsewhere (see QuantizedDecoder). x [M, D] -> M rows of V.
    public func argmaxExactLogits(_ x: Tensor) -> [[Float]] {
        quantizedDecoder.logits(transformed(x))
    }

    /// `argmaxExactLogits` on already transformed states; `exactTop`: the number of largest
    /// logits of each row that are exact (QuantizedDecoder.logits).
    public func argmaxExactLogits(transformed states: Tensor, exactTop: Int = 1) -> [[Float]] {
        quantizedDecoder.logits(states, exactTop: exactTop)
    }

    /// Every head's logits [H, M, V] (the reference twin: one decoder product per head).
    public func headLogits(_ x: Tensor) -> Tensor {
        let m = x.shape[0], v = vocabularySize
        let out = Tensor(zeros: [count, m, v])
        for (h, t) in transforms.enumerated() {
            let logits = Matmul.matmul(t(x), decoder.weight, transposeB: true)  // [M, V]
            let dst = out.storage.base + h * m * v
            logits.withUnsafeBufferPointer { l in
                biases[h].withUnsafeBufferPointer { b in
                    for r in 0..<m { for j in 0..<v { dst[r * v + j] = l[r * v + j] + b[j] } }
                }
            }
        }
        return out
    }
}
