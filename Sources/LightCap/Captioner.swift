// Captioner: the shared, read-only model (loaded once, used by any number of threads) and the
// pipeline grid -> concepts -> modulator -> visual tokens -> fusion + heads -> decoding.
// Per-request state (backbone workspace, key/value caches, buffers) lives in a CaptionSession.

import Foundation
import LightCapCore
import LightCapImage
import LightCapModel
import LightCapText

/// A concept kept for an image and its score (cosine of its best region).
public struct ConceptScore: Codable, Sendable, Equatable {
    public var name: String
    public var score: Float

    public init(name: String, score: Float) {
        self.name = name
        self.score = score
    }
}

/// A caption and what it is made of.
public struct Caption: Codable, Sendable, Equatable {
    /// The detokenised caption.
    public var text: String
    /// WordPiece tokens ("##" marks a continuing piece).
    public var tokens: [String]
    /// Token ids in the fusion vocabulary (no [CLS]/[SEP]).
    public var tokenIds: [Int]
    /// Greedy: mean log-probability of the chosen tokens ([SEP] included when emitted);
    /// beam: the length-normalised beam score. Higher is more confident.
    public var score: Double
    /// The concepts that steered the caption, best first.
    public var concepts: [ConceptScore]
    /// Milliseconds per stage: decode, preprocess, backbone, concepts, fusion (those that ran).
    public var timings: [String: Double]
}

/// Everything the fusion model takes from one image (for inspection and parity tests).
public struct ImageFeatures: Sendable {
    /// Kept concepts (empty without a concept extractor).
    public var concepts: ConceptSelection
    /// Channel weights [C] (nil without a modulator).
    public var modulation: [Float]?
    /// Modulated grid [N, C].
    public var modulated: Tensor
    /// Projected visual tokens [N, D].
    public var visualTokens: Tensor
}

/// The LightCap captioner. Read-only after `init`; share one instance between threads.
public final class Captioner: Sendable {
    /// The model's configuration (config.json).
    public let configuration: Configuration
    /// The fusion model's WordPiece tokenizer.
    public let tokenizer: WordPieceTokenizer
    /// Ids of [CLS], [SEP], [MASK], [PAD].
    public let special: SpecialTokenIDs
    /// oneDNN threads used by each call.
    public let threads: Int
    /// The model directory it was loaded from.
    public let modelDirectory: URL
    let visual: CLIPResNet
    let preprocessor: CLIPPreprocessor
    /// nil without concepts (`concepts.enabled` false: no concept segment, no modulation).
    let conceptExtractor: ConceptExtractor?
    /// WordPiece ids of every concept (row i = concepts.txt line i); empty without concepts.
    let conceptPieces: [[Int]]
    let modulator: Modulator?
    let projection: ImageProjection
    package let fusion: FusionModel
    package let heads: PredictionHeads

    /// Loads a model directory (config.json, model.safetensors, vocab.txt, concepts.txt).
    /// Loading is strict: a missing, unused or mis-shaped tensor is an error naming it. Without
    /// concepts (`concepts.enabled` false) there are no `concepts.*`/`modulator.*` tensors and
    /// concepts.txt is not read.
    /// `convolutions`: how the backbone computes its 3x3 convolutions (`.exact`; or
    /// `.lightcapWinograd`, LightCap's Winograd, faster on the paper's sizes, relative error ~3e-6
    /// on the parity fixtures; docs/VISUAL.md). `fusionWeights`: what the fusion layers read at
    /// each decoding step (`.f32`, exact; or `.int8`, weight-only INT8, faster, with the quality
    /// budget of docs/DECODING.md).
    public init(modelDirectory: URL, threads: Int = 1, convolutions: ConvolutionPolicy = .exact,
                fusionWeights: FusionWeights = .f32) throws {
        guard threads >= 1 else { throw LightCapError.invalidArgument(reason: "threads must be at least 1, got \(threads)") }
        let directory = try ModelDirectory(url: modelDirectory)
        let config = directory.configuration
        let tokens = config.tokens
        let tokenizer = try WordPieceTokenizer(
            vocabURL: directory.vocabURL, doLowerCase: config.tokenizer.doLowerCase, unknownToken: tokens.unk,
            specialTokens: [tokens.pad, tokens.unk, tokens.cls, tokens.sep, tokens.mask])
        guard tokenizer.count == config.fusion.vocabSize else {
            throw LightCapError.invalidConfiguration(reason: "vocab.txt has \(tokenizer.count) tokens, fusion.vocab_size is \(config.fusion.vocabSize)")
        }
        func id(_ token: String) throws -> Int {
            guard let id = tokenizer.id(of: token) else {
                throw LightCapError.invalidConfiguration(reason: "special token \(token) is not in vocab.txt")
            }
            return id
        }
        let special = SpecialTokenIDs(cls: try id(tokens.cls), sep: try id(tokens.sep), mask: try id(tokens.mask), pad: try id(tokens.pad))
        let names = try directory.conceptNames()
        conceptPieces = try names.map { name in
            let pieces = tokenizer.encode(name)
            guard !pieces.isEmpty else {
                throw LightCapError.invalidConfiguration(reason: "concept '\(name)' in concepts.txt tokenizes to nothing")
            }
            return pieces
        }

        let store = try directory.weightStore()
        visual = try CLIPResNet(store, configuration: config, policy: convolutions, threads: threads)
        preprocessor = CLIPPreprocessor(size: config.image.size, mean: config.image.mean, std: config.image.std)
        conceptExtractor = config.concepts.enabled
            ? try ConceptExtractor(store.scoped("concepts"), configuration: config, names: names) : nil
        // Configuration.validate: a modulator needs concepts (there are none to modulate with otherwise).
        modulator = config.modulator.enabled ? try Modulator(store.scoped("modulator"), configuration: config) : nil
        fusion = try FusionModel(store.scoped("bert"), configuration: config, stepWeights: fusionWeights)
        projection = try ImageProjection(store.scoped("image_projection"), configuration: config)
        // With INT8 fusion weights, greedy and beam decoding read the INT8 vocabulary (exact
        // where it decides): the packed F32 decoder would only take memory.
        heads = try PredictionHeads(store.scoped("heads"), configuration: config, wordEmbeddings: fusion.wordEmbeddings,
                                    packF32Decoder: fusionWeights != .int8)
        try store.finish()
        configuration = config
        self.tokenizer = tokenizer
        self.special = special
        self.threads = threads
        self.modelDirectory = modelDirectory
    }

    /// The concept vocabulary (empty without concepts).
    public var conceptNames: [String] { conceptExtractor?.names ?? [] }

    /// Concepts, modulation and visual tokens of a grid [N, C].
    public func imageFeatures(grid: Tensor) throws -> ImageFeatures {
        let n = configuration.visualTokens, c = configuration.gridChannels
        guard grid.shape == [n, c] else {
            throw LightCapError.invalidArgument(reason: "grid has shape \(grid.shape), the model needs [\(n), \(c)]")
        }
        let selection = conceptExtractor?(grid) ?? ConceptSelection(ids: [], scores: [])
        var modulation: [Float]?
        var modulated = grid
        if let modulator {
            let m = modulator.modulation(fusion.meanWordEmbeddings(selection.ids.map { conceptPieces[$0] }))
            modulated = Modulator.modulate(grid, by: m)
            modulation = m
        }
        return ImageFeatures(concepts: selection, modulation: modulation, modulated: modulated,
                             visualTokens: projection(modulated))
    }

    /// The fusion input of `features` with the caption segment `captionSegment` (e.g. [CLS] t.. [MASK]).
    public func fusionInput(captionSegment: [Int], features: ImageFeatures) throws -> FusionInput {
        try FusionInput.build(captionSegment: captionSegment, conceptPieces: conceptSegment(features.concepts),
                              special: special, captionSegmentLength: configuration.decoding.captionSegmentLength,
                              visualCount: configuration.visualTokens,
                              maxPositions: configuration.fusion.maxPositionEmbeddings)
    }

    /// Runs the fusion model on a whole input: every hidden state, the heads' logits [H, A, V] (each
    /// head apart) and the ensemble logits [A, V] (one decoder product) of the caption-segment rows.
    public func forward(_ input: FusionInput, features: ImageFeatures) throws
        -> (hidden: [Tensor], headLogits: Tensor, logits: Tensor) {
        let x = try fusion.inputEmbeddings(input, visualTokens: features.visualTokens)
        let hidden = fusion.encode(x, mask: input.mask)
        let rows = hidden.last!.rows(0..<input.captionSegmentLength)
        return (hidden, heads.headLogits(rows), heads.logits(rows))
    }

    /// A new per-request session (backbone workspace, decoding caches, scratch buffers): keep
    /// one per thread and reuse it from image to image.
    public func makeSession() throws -> CaptionSession { try CaptionSession(self) }

    /// Checks `options` against the model: beam at least 1, max length in
    /// 1...`configuration.decoding.longestCaption` (the caption segment holds [CLS] and [MASK] too).
    public func validate(_ options: DecodingOptions) throws {
        guard options.beamSize >= 1 else {
            throw LightCapError.invalidArgument(reason: "beam size must be at least 1, got \(options.beamSize)")
        }
        let longest = configuration.decoding.longestCaption
        guard (1...max(longest, 1)).contains(options.maxLength) else {
            throw LightCapError.invalidArgument(reason: "max length \(options.maxLength) must lie in 1...\(longest) (caption_segment_length \(configuration.decoding.captionSegmentLength) holds [CLS], the caption and [MASK])")
        }
    }

    /// The kept concepts' pieces, concatenated in score order (no [SEP]); nil without concepts:
    /// the text is then the caption segment alone (T = A).
    package func conceptSegment(_ selection: ConceptSelection) -> [Int]? {
        guard conceptExtractor != nil else { return nil }
        return selection.ids.flatMap { conceptPieces[$0] }
    }
}

extension WordPieceTokenizer {
    /// Token strings of ids (out-of-range ids skipped).
    func tokenize(ids: [Int]) -> [String] { ids.compactMap { token(of: $0) } }
}

/// Milliseconds per stage of one caption.
struct Stopwatch {
    var timings: [String: Double] = [:]
    var last = ContinuousClock.now

    mutating func lap(_ stage: String) {
        let now = ContinuousClock.now
        let d = now - last
        timings[stage, default: 0] += Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) * 1e-15
        last = now
    }
}
