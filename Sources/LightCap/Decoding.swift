// Decoding (docs/FORMAT.md 11-13): greedy and beam search over a per-request session that gives
// the ensemble logits at the [MASK] after each caption prefix. Two sessions: the cached one
// (concept + visual keys/values once per image, two rows per hypothesis and step) and the
// uncached one (the whole padded sequence every step: the reference twin). Both must give the
// same tokens.

import LightCapCore
import LightCapModel

/// How to decode a caption.
public struct DecodingOptions: Sendable, Equatable, Codable {
    /// Beam width; 1 is greedy decoding.
    public var beamSize: Int
    /// Most tokens in a caption (the [SEP] not counted).
    public var maxLength: Int
    /// Use the key/value cache (false runs the uncached reference loop).
    public var useCache: Bool

    public init(beamSize: Int = 1, maxLength: Int = 20, useCache: Bool = true) {
        self.beamSize = beamSize
        self.maxLength = maxLength
        self.useCache = useCache
    }
}

/// The image-side inputs of the fusion model for one image.
package struct ImageContext {
    /// Concept pieces in score order, concatenated, no [SEP]; nil without a concept segment.
    package var conceptPieces: [Int]?
    /// [N, D].
    package var visualTokens: Tensor

    package init(conceptPieces: [Int]?, visualTokens: Tensor) {
        self.conceptPieces = conceptPieces
        self.visualTokens = visualTokens
    }
}

/// Gives ensemble logits at the [MASK] that follows each caption prefix (tokens without [CLS]),
/// for one or several images at once (`start` takes their contexts).
protocol LogitSession: AnyObject {
    /// Prefix i continues a caption of image `images[i]` (an index into the started contexts).
    func logits(prefixes: [[Int]], images: [Int]) throws -> [[Float]]
    /// Asked before every step: true stops decoding with `LightCapError.cancelled`.
    var shouldStop: () -> Bool { get set }
    /// Greedy's log-probabilities of `tokens` for `image`: tokens[i] was chosen from `rows[i]`,
    /// that image's logits at its i-th step. By default the rows' own log-softmax.
    func greedyLogProbabilities(of tokens: [Int], rows: [[Float]], image: Int) -> [Float]
}

extension LogitSession {
    func greedyLogProbabilities(of tokens: [Int], rows: [[Float]], image: Int) -> [Float] {
        logSoftmax(at: tokens, rows: rows)
    }

    /// Logits of prefixes that all continue image 0 (beam search).
    func logits(prefixes: [[Int]]) throws -> [[Float]] {
        try logits(prefixes: prefixes, images: Array(repeating: 0, count: prefixes.count))
    }
}

/// rows[i][tokens[i]] - log-sum-exp(rows[i]).
func logSoftmax(at tokens: [Int], rows: [[Float]]) -> [Float] {
    zip(tokens, rows).map { t, row in row[t] - Float(row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }) }
}

/// The uncached reference loop: builds and runs the whole padded sequence for every prefix.
final class UncachedSession: LogitSession {
    let fusion: FusionModel
    let heads: PredictionHeads
    let special: SpecialTokenIDs
    let captionSegmentLength: Int
    /// The images being captioned (`start`).
    var contexts: [ImageContext] = []
    var shouldStop: () -> Bool = { false }

    init(fusion: FusionModel, heads: PredictionHeads, special: SpecialTokenIDs, captionSegmentLength: Int) {
        self.fusion = fusion
        self.heads = heads
        self.special = special
        self.captionSegmentLength = captionSegmentLength
    }

    /// Starts on new images.
    func start(_ contexts: [ImageContext]) { self.contexts = contexts }

    func logits(prefixes: [[Int]], images: [Int]) throws -> [[Float]] {
        if shouldStop() { throw LightCapError.cancelled(stage: "fusion") }
        let d = fusion.hiddenSize
        let rows = Tensor(zeros: [prefixes.count, d])
        for (i, prefix) in prefixes.enumerated() {
            let context = contexts[images[i]]
            let input = try FusionInput.build(
                captionSegment: [special.cls] + prefix + [special.mask], conceptPieces: context.conceptPieces,
                special: special, captionSegmentLength: captionSegmentLength,
                visualCount: context.visualTokens.shape[0], maxPositions: fusion.configuration.maxPositionEmbeddings)
            let x = try fusion.inputEmbeddings(input, visualTokens: context.visualTokens)
            let last = fusion.encode(x, mask: input.mask).last!
            last.withUnsafeBufferPointer {
                (rows.storage.base + i * d).update(from: $0.baseAddress! + (prefix.count + 1) * d, count: d)
            }
        }
        return splitRows(heads.logits(rows))
    }
}

/// The cached loop: concept + visual keys/values once per image, then two rows per hypothesis
/// and step; the rows of several images go through the layers together. Reused from image to
/// image (`start`).
package final class CachedSession: LogitSession {
    let fusion: FusionModel
    let heads: PredictionHeads
    let special: SpecialTokenIDs
    let captionSegmentLength: Int
    /// The current images' concept + visual keys and values (`start`).
    package private(set) var images: [ImageCache] = []
    /// A hypothesis: its image and its caption prefix.
    struct Key: Hashable {
        var image: Int
        var prefix: [Int]
    }
    /// Caption caches of the prefixes of the last step.
    var caches: [Key: CaptionCache] = [:]
    /// Use the INT8 decoder with each row exact at its `exactTop` largest logits (1: greedy's
    /// argmax; 2 x beam for beam search), approximate elsewhere; nil: the F32 product.
    private(set) var exactTop: Int?
    /// Per image, the averaged head state [1, D] of each of its steps run with `exactTop`.
    var transformedStates: [[Tensor]] = []
    var shouldStop: () -> Bool = { false }

    package init(fusion: FusionModel, heads: PredictionHeads, special: SpecialTokenIDs, captionSegmentLength: Int) {
        self.fusion = fusion
        self.heads = heads
        self.special = special
        self.captionSegmentLength = captionSegmentLength
    }

    /// Starts on new images: their keys and values, empty caption caches. `exactTop`: the INT8
    /// vocabulary product with exact rescoring of every token that could be among each row's
    /// `exactTop` largest logits; nil: the F32 product.
    package func start(_ contexts: [ImageContext], exactTop: Int?) throws {
        images = try contexts.map { context in
            let conceptTokens = context.conceptPieces.map { $0 + [special.sep] } ?? []
            guard captionSegmentLength + conceptTokens.count <= fusion.configuration.maxPositionEmbeddings else {
                throw LightCapError.invalidArgument(reason: "text of \(captionSegmentLength + conceptTokens.count) tokens exceeds max_position_embeddings")
            }
            return try fusion.imageCache(conceptTokens: conceptTokens, visualTokens: context.visualTokens,
                                         captionSegmentLength: captionSegmentLength)
        }
        caches.removeAll(keepingCapacity: true)
        transformedStates = Array(repeating: [], count: contexts.count)
        self.exactTop = exactTop
    }

    func logits(prefixes: [[Int]], images imageIndices: [Int]) throws -> [[Float]] {
        precondition(!images.isEmpty, "CachedSession.start comes first")
        if shouldStop() { throw LightCapError.cancelled(stage: "fusion") }
        var parents: [CaptionCache] = [], tokens: [Int] = []
        var taken: [Key: CaptionCache] = [:]
        for (prefix, image) in zip(prefixes, imageIndices) {
            if let last = prefix.last {
                // The first child takes the parent's cache over (it then grows in place).
                let parentKey = Key(image: image, prefix: Array(prefix.dropLast()))
                guard let parent = caches.removeValue(forKey: parentKey) ?? taken[parentKey] else {
                    throw LightCapError.invalidArgument(reason: "cached decoding: prefix \(prefix.dropLast()) of image \(image) was not run before")
                }
                taken[parentKey] = parent
                parents.append(parent)
                tokens.append(last)
            } else {
                parents.append(CaptionCache(image: images[image]))  // first step: [CLS] at 0
                tokens.append(special.cls)
            }
        }
        taken = [:]  // drop the extra references: a lone child's cache is then unique
        let (hidden, grown) = try fusion.step(caches: consume parents, tokens: tokens, maskID: special.mask)
        let keys = zip(imageIndices, prefixes).map { Key(image: $0, prefix: $1) }
        caches = Dictionary(zip(keys, grown), uniquingKeysWith: { a, _ in a })
        let states = heads.transformed(hidden)
        guard let exactTop else { return splitRows(heads.vocabularyLogits(transformed: states)) }
        if exactTop == 1 && fusion.stepWeights == .f32 {  // for the exact scores after the loop
            for (r, image) in imageIndices.enumerated() { transformedStates[image].append(states.rows(r..<(r + 1))) }
        }
        return heads.argmaxExactLogits(transformed: states, exactTop: exactTop)
    }

    /// With `exactTop` the rows are exact only near their argmax: the log-probabilities come
    /// from one F32 vocabulary product over all the image's recorded steps' states at once. With
    /// INT8 fusion weights the states are approximate already: the rows' own log-sum-exp is
    /// used (the logits away from the argmax within their bound, QuantizedDecoder).
    func greedyLogProbabilities(of tokens: [Int], rows: [[Float]], image: Int) -> [Float] {
        guard exactTop != nil, fusion.stepWeights == .f32 else { return logSoftmax(at: tokens, rows: rows) }
        let recorded = transformedStates[image]
        precondition(tokens.count == recorded.count, "one token per recorded step")
        guard !tokens.isEmpty else { return [] }
        let d = recorded[0].shape[1]
        let states = Tensor(zeros: [tokens.count, d])
        for (i, s) in recorded.enumerated() {
            s.withUnsafeBufferPointer { (states.storage.base + i * d).update(from: $0.baseAddress!, count: d) }
        }
        let logits = heads.vocabularyLogits(transformed: states)  // [steps, V]
        let v = logits.shape[1]
        return logits.withUnsafeBufferPointer { p in
            tokens.indices.map { i in
                let row = UnsafeBufferPointer(rebasing: p[(i * v)..<((i + 1) * v)])
                return row[tokens[i]] - Float(LogSoftmax.logSumExp(row))
            }
        }
    }
}

func splitRows(_ x: Tensor) -> [[Float]] {
    let (m, v) = (x.shape[0], x.shape[1])
    return x.withUnsafeBufferPointer { p in (0..<m).map { Array(p[($0 * v)..<(($0 + 1) * v)]) } }
}

/// A decoded token sequence and its score.
package struct Hypothesis: Equatable {
    package var tokens: [Int]
    package var score: Double
}

enum Decoder {
    /// Rule 11: argmax (lowest id on ties) at each step, stop at [SEP]; score = mean log-prob of
    /// the chosen tokens, the [SEP] included when emitted. Decodes the `images` started in
    /// `session` together: each step runs the unfinished ones in one call.
    static func greedy(_ session: LogitSession, images: Int, sep: Int, maxLength: Int) throws -> [Hypothesis] {
        var tokens = [[Int]](repeating: [], count: images), chosen = tokens
        var rows = [[[Float]]](repeating: [], count: images)
        var live = Array(0..<images)
        for _ in 0..<maxLength where !live.isEmpty {
            let logits = try session.logits(prefixes: live.map { tokens[$0] }, images: live)
            var next: [Int] = []
            for (row, image) in zip(logits, live) {
                let best = row.withUnsafeBufferPointer { FastMath.firstIndexOfMax($0) }  // lowest id on ties
                chosen[image].append(best)
                rows[image].append(row)
                if best != sep {
                    tokens[image].append(best)
                    next.append(image)
                }
            }
            live = next
        }
        return (0..<images).map { image in
            let logps = session.greedyLogProbabilities(of: chosen[image], rows: rows[image], image: image)
            let mean = logps.isEmpty ? 0 : logps.reduce(0.0) { $0 + Double($1) } / Double(logps.count)
            return Hypothesis(tokens: tokens[image], score: mean)
        }
    }

    /// Rule 12: beam search of width `beam` (see docs/FORMAT.md for the exact tie and stop rules).
    static func beamSearch(_ session: LogitSession, sep: Int, beam: Int, maxLength: Int) throws -> Hypothesis {
        var live: [(tokens: [Int], score: Float)] = [([], 0)]
        var finished: [(score: Float, tokens: [Int])] = []
        var exhausted = true
        for _ in 0..<maxLength {
            let logits = try session.logits(prefixes: live.map(\.tokens))
            let vocab = logits[0].count
            // Every candidate score_b + log_softmax; keep the 2B best (ties: lower b*V + v).
            var selection = TopCandidates(count: 2 * beam)
            for (b, row) in logits.enumerated() {
                let lse = Float(row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) })
                row.withUnsafeBufferPointer { selection.offer(row: $0, base: live[b].score, shift: lse, flatOffset: b * vocab) }
            }
            let top = selection.items
            var next: [(tokens: [Int], score: Float)] = []
            for (rank, c) in top.enumerated() {
                let (b, v) = (c.flat / vocab, c.flat % vocab)
                let tokens = live[b].tokens
                if v == sep {
                    if rank < beam { finished.append((c.score / Float(tokens.count + 1), tokens)) }
                } else {
                    next.append((tokens + [v], c.score))
                }
                if next.count == beam { break }
            }
            live = next
            if finished.count >= beam {
                exhausted = false
                break
            }
        }
        if exhausted {
            finished += live.map { ($0.score / Float($0.tokens.count), $0.tokens) }
        }
        var best = 0
        for j in finished.indices where finished[j].score > finished[best].score { best = j }
        return Hypothesis(tokens: finished[best].tokens, score: Double(finished[best].score))
    }
}

/// log-sum-exp of a logit row, the normaliser of log_softmax.
package enum LogSoftmax {
    /// log(sum(exp(x))), vectorised: the max in 16 lanes, then e^(x - max) by FastMath's
    /// branch-free exp (about 3e-7 relative per term), summed in Float lanes over blocks of 128
    /// values (at most 8 additions per lane) and the blocks in Double, so the sum keeps about
    /// 1e-7 relative error over 30522 values where one Float sum would lose 1e-5. About 4x
    /// libm's `expf` loop at base size (0.06 ms a row). Twin: `logSumExpReference`; an empty or
    /// all -inf row gives -inf.
    package static func logSumExp(_ x: UnsafeBufferPointer<Float>) -> Double {
        let n = x.count
        let m = FastMath.maximum(x)
        if m == -.infinity { return -.infinity }
        var blocks = SIMD16<Double>()
        var i = 0
        while i + 16 <= n {
            var block = SIMD16<Float>()
            let end = min(n - 15, i + 128)
            while i < end {
                block += FastMath.expNonPositive(FastMath.lanes(x, i) - m)
                i += 16
            }
            var wide = SIMD16<Double>()
            for l in 0..<16 { wide[l] = Double(block[l]) }
            blocks += wide
        }
        var sum = blocks.sum()
        while i < n { sum += Double(FastMath.expNonPositive(x[i] - m)); i += 1 }
        return Double(m) + _log(sum)
    }

    /// The reference twin: libm's exp in Double.
    package static func logSumExpReference(_ x: UnsafeBufferPointer<Float>) -> Double {
        var m = -Float.infinity
        for v in x { m = max(m, v) }
        var sum = 0.0
        for v in x { sum += _exp(Double(v - m)) }
        return Double(m) + _log(sum)
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _exp(_ x: Double) -> Double { Glibc.exp(x) }
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) func _exp(_ x: Double) -> Double { Darwin.exp(x) }
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
#endif
