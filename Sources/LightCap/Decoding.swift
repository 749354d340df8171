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
struct ImageContext {
    /// Concept pieces in score order, concatenated, no [SEP]; nil without a concept segment.
    var conceptPieces: [Int]?
    /// [N, D].
    var visualTokens: Tensor
}

/// Gives ensemble logits at the [MASK] that follows each caption prefix (tokens without [CLS]).
protocol LogitSession: AnyObject {
    func logits(prefixes: [[Int]]) throws -> [[Float]]
}

/// The uncached reference loop: builds and runs the whole padded sequence for every prefix.
final class UncachedSession: LogitSession {
    let fusion: FusionModel
    let heads: PredictionHeads
    let special: SpecialTokenIDs
    let context: ImageContext
    let captionSegmentLength: Int

    init(fusion: FusionModel, heads: PredictionHeads, special: SpecialTokenIDs, context: ImageContext, captionSegmentLength: Int) {
        self.fusion = fusion
        self.heads = heads
        self.special = special
        self.context = context
        self.captionSegmentLength = captionSegmentLength
    }

    func logits(prefixes: [[Int]]) throws -> [[Float]] {
        let d = fusion.hiddenSize
        let rows = Tensor(zeros: [prefixes.count, d])
        for (i, prefix) in prefixes.enumerated() {
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

/// The cached loop: concept + visual keys/values once, then two rows per hypothesis and step.
final class CachedSession: LogitSession {
    let fusion: FusionModel
    let heads: PredictionHeads
    let special: SpecialTokenIDs
    let image: ImageCache
    /// Caption caches of the prefixes of the last step, keyed by the prefix.
    var caches: [[Int]: CaptionCache] = [:]

    init(fusion: FusionModel, heads: PredictionHeads, special: SpecialTokenIDs, context: ImageContext, captionSegmentLength: Int) throws {
        self.fusion = fusion
        self.heads = heads
        self.special = special
        let conceptTokens = context.conceptPieces.map { $0 + [special.sep] } ?? []
        guard captionSegmentLength + conceptTokens.count <= fusion.configuration.maxPositionEmbeddings else {
            throw LightCapError.invalidArgument(reason: "text of \(captionSegmentLength + conceptTokens.count) tokens exceeds max_position_embeddings")
        }
        image = try fusion.imageCache(conceptTokens: conceptTokens, visualTokens: context.visualTokens,
                                      captionSegmentLength: captionSegmentLength)
        self.captionSegmentLength = captionSegmentLength
    }

    let captionSegmentLength: Int

    func logits(prefixes: [[Int]]) throws -> [[Float]] {
        var parents: [CaptionCache] = [], tokens: [Int] = []
        for prefix in prefixes {
            guard prefix.count + 2 <= captionSegmentLength else {
                throw LightCapError.invalidArgument(reason: "caption of \(prefix.count) tokens does not fit the caption segment (\(captionSegmentLength))")
            }
            if let last = prefix.last {
                guard let parent = caches[Array(prefix.dropLast())] else {
                    throw LightCapError.invalidArgument(reason: "cached decoding: prefix \(prefix.dropLast()) was not run before")
                }
                parents.append(parent)
                tokens.append(last)
            } else {
                parents.append(CaptionCache(layers: fusion.layerCount))  // first step: [CLS] at 0
                tokens.append(special.cls)
            }
        }
        let (hidden, grown) = try fusion.step(caches: parents, tokens: tokens, maskID: special.mask, image: image)
        caches = Dictionary(zip(prefixes, grown), uniquingKeysWith: { a, _ in a })
        return splitRows(heads.logits(hidden))
    }
}

func splitRows(_ x: Tensor) -> [[Float]] {
    let (m, v) = (x.shape[0], x.shape[1])
    return x.withUnsafeBufferPointer { p in (0..<m).map { Array(p[($0 * v)..<(($0 + 1) * v)]) } }
}

/// A decoded token sequence and its score.
struct Hypothesis: Equatable {
    var tokens: [Int]
    var score: Double
}

enum Decoder {
    /// Rule 11: argmax (lowest id on ties) at each step, stop at [SEP]; score = mean log-prob of
    /// the chosen tokens, the [SEP] included when emitted.
    static func greedy(_ session: LogitSession, sep: Int, maxLength: Int) throws -> Hypothesis {
        var tokens: [Int] = [], logps: [Float] = []
        for _ in 0..<maxLength {
            let logits = try session.logits(prefixes: [tokens])[0]
            var best = 0
            for v in logits.indices where logits[v] > logits[best] { best = v }
            logps.append(logits.withUnsafeBufferPointer { logSoftmax($0, at: best) })
            if best == sep { break }
            tokens.append(best)
        }
        let mean = logps.isEmpty ? 0 : logps.reduce(0.0) { $0 + Double($1) } / Double(logps.count)
        return Hypothesis(tokens: tokens, score: mean)
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
            var cand: [(score: Float, flat: Int)] = []
            cand.reserveCapacity(2 * beam * live.count)
            for (b, row) in logits.enumerated() {
                let lp = row.withUnsafeBufferPointer { Activations.logSoftmax($0) }
                let base = live[b].score
                for v in 0..<vocab { cand.append((base + lp[v], b * vocab + v)) }
            }
            let top = topCandidates(cand, count: 2 * beam)
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

    /// The `count` largest by score, ties by lower flat index, in that order.
    static func topCandidates(_ cand: [(score: Float, flat: Int)], count: Int) -> [(score: Float, flat: Int)] {
        func better(_ a: (score: Float, flat: Int), _ b: (score: Float, flat: Int)) -> Bool {
            a.score != b.score ? a.score > b.score : a.flat < b.flat
        }
        var top: [(score: Float, flat: Int)] = []
        top.reserveCapacity(count + 1)
        for c in cand {
            if top.count == count, let last = top.last, !better(c, last) { continue }
            var i = top.count
            while i > 0 && better(c, top[i - 1]) { i -= 1 }
            top.insert(c, at: i)
            if top.count > count { top.removeLast() }
        }
        return top
    }

    /// log_softmax(x)[index], the log-sum-exp in Double.
    static func logSoftmax(_ x: UnsafeBufferPointer<Float>, at index: Int) -> Float {
        var m = -Float.infinity
        for v in x { m = max(m, v) }
        var sum = 0.0
        for v in x { sum += _exp(Double(v - m)) }
        return Float(Double(x[index]) - (Double(m) + _log(sum)))
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
