// CaptionSession: the per-request state of captioning (as whisper.cpp keeps a context's state
// apart from the shared model): the backbone's activation buffers and oneDNN stream, the grid
// buffer, the decoding caches. One session per thread; reuse it from image to image. Every
// input form enters the one caption path at its stage: file -> bytes -> image -> pixels -> grid.

import Foundation
import LightCapFiles
import LightCapCore
import LightCapImage
import LightCapModel

/// Per-request captioning state over a shared `Captioner`. Not thread-safe: one per thread.
public final class CaptionSession {
    /// The shared model.
    public let captioner: Captioner
    private let workspace: CLIPResNet.Workspace
    /// The backbone's output [N, C], rewritten by each caption.
    private var grid: Tensor
    private let cached: CachedSession
    /// Asked between stages and before every decoding step: true stops the caption with
    /// `LightCapError.cancelled` (a service sets it when a request's deadline passes).
    public var shouldStop: () -> Bool = { false }
    /// What an encoded image may claim (pixels, sides), checked on its header before decoding.
    public var imageLimits = ImageLimits()
    /// The uncached reference loop (`DecodingOptions.useCache` false), made when first asked for.
    private lazy var uncached = UncachedSession(
        fusion: captioner.fusion, heads: captioner.heads, special: captioner.special,
        captionSegmentLength: captioner.configuration.decoding.captionSegmentLength)

    init(_ captioner: Captioner) throws {
        self.captioner = captioner
        workspace = try captioner.visual.makeWorkspace()
        grid = Tensor(zeros: [captioner.configuration.visualTokens, captioner.configuration.gridChannels])
        cached = CachedSession(fusion: captioner.fusion, heads: captioner.heads, special: captioner.special,
                               captionSegmentLength: captioner.configuration.decoding.captionSegmentLength)
    }

    /// Where a caption starts: each form enters the pipeline at its own stage.
    private enum Input {
        case file(URL)
        case data(Data)
        case image(RGBImage)
        case pixels([Float])
        case grid(Tensor)
    }

    /// Captions an encoded image file (JPEG, PNG, WebP; EXIF orientation applied).
    public func caption(imageAt url: URL, options: DecodingOptions = .init()) throws -> Caption {
        try caption(.file(url), options: options)
    }

    /// Captions encoded image bytes (JPEG, PNG, WebP).
    public func caption(imageData data: Data, options: DecodingOptions = .init()) throws -> Caption {
        try caption(.data(data), options: options)
    }

    /// Captions decoded pixels (any size; resized and normalised as CLIP does).
    public func caption(image: RGBImage, options: DecodingOptions = .init()) throws -> Caption {
        try caption(.image(image), options: options)
    }

    /// Captions normalised pixels [3, S, S] (channel-major, `CLIPPreprocessor`'s output).
    public func caption(pixels: [Float], options: DecodingOptions = .init()) throws -> Caption {
        try caption(.pixels(pixels), options: options)
    }

    /// Captions a grid [N, C] (the backbone's output).
    public func caption(grid: Tensor, options: DecodingOptions = .init()) throws -> Caption {
        try caption(.grid(grid), options: options)
    }

    /// Captions several encoded images (JPEG, PNG, WebP) as one batch: each goes through
    /// decoding, the backbone and the concepts on its own, then greedy decoding runs the
    /// unfinished captions of all of them through the fusion model together (beam search decodes
    /// them one by one). The tokens equal those of captioning each alone. One result per image,
    /// in order: a bad image fails alone. Each caption's `fusion` timing is the whole batch's.
    public func captions(imageData: [Data], options: DecodingOptions = .init()) throws -> [Result<Caption, any Error>] {
        try captions(imageData.map { .data($0) }, options: options)
    }

    /// Captions several image files as one batch (see `captions(imageData:options:)`).
    public func captions(imagesAt urls: [URL], options: DecodingOptions = .init()) throws -> [Result<Caption, any Error>] {
        try captions(urls.map { .file($0) }, options: options)
    }

    /// Captions several decoded images as one batch (see `captions(imageData:options:)`).
    public func captions(images: [RGBImage], options: DecodingOptions = .init()) throws -> [Result<Caption, any Error>] {
        try captions(images.map { .image($0) }, options: options)
    }

    /// The one caption path.
    private func caption(_ input: Input, options: DecodingOptions) throws -> Caption {
        try captions([input], options: options)[0].get()
    }

    /// The one batch path: every input to its features (its own errors kept in place), then the
    /// decoding of all of them; `timings` gets the stages that ran. Throws only what fails the
    /// whole batch: invalid options, cancellation.
    private func captions(_ inputs: [Input], options: DecodingOptions) throws -> [Result<Caption, any Error>] {
        try captioner.validate(options)
        Threads.set(captioner.threads)
        var results = [Result<Caption, any Error>?](repeating: nil, count: inputs.count)
        var prepared: [(index: Int, features: ImageFeatures, timings: [String: Double])] = []
        for (index, input) in inputs.enumerated() {
            var clock = Stopwatch()
            do {
                let features = try features(input, clock: &clock)
                prepared.append((index, features, clock.timings))
            } catch {
                if case LightCapError.cancelled = error { throw error }
                results[index] = .failure(error)
            }
        }
        if !prepared.isEmpty {
            var clock = Stopwatch()
            let hypotheses = try decode(features: prepared.map(\.features), options: options)
            clock.lap("fusion")
            let tokenizer = captioner.tokenizer
            for (item, hypothesis) in zip(prepared, hypotheses) {
                let concepts = zip(item.features.concepts.ids, item.features.concepts.scores).map {
                    ConceptScore(name: captioner.conceptNames[$0], score: $1)
                }
                results[item.index] = .success(Caption(
                    text: tokenizer.decodeCaption(hypothesis.tokens), tokens: tokenizer.tokenize(ids: hypothesis.tokens),
                    tokenIds: hypothesis.tokens, score: hypothesis.score, concepts: concepts,
                    timings: item.timings.merging(clock.timings) { a, _ in a }))
            }
        }
        return results.map { $0! }
    }

    /// An input's image features: file -> bytes -> image -> pixels -> grid -> features.
    private func features(_ input: Input, clock: inout Stopwatch) throws -> ImageFeatures {
        var stage = input
        if case .file(let url) = stage { stage = .data(try Self.read(url)) }
        func checkpoint(_ next: String) throws { if shouldStop() { throw LightCapError.cancelled(stage: next) } }
        try checkpoint("decode")
        if case .data(let data) = stage {
            stage = .image(try ImageDecoder.decode(data, limits: imageLimits, minimumSide: captioner.configuration.image.size))
            clock.lap("decode")
        }
        if case .image(let image) = stage {
            stage = .pixels(captioner.preprocessor(image))
            clock.lap("preprocess")
        }
        try checkpoint("backbone")
        if case .pixels(let pixels) = stage {
            let side = captioner.visual.imageSize
            guard pixels.count == 3 * side * side else {
                throw LightCapError.invalidArgument(reason: "the backbone expects 3x\(side)x\(side) = \(3 * side * side) pixels, got \(pixels.count)")
            }
            try pixels.withUnsafeBufferPointer { x in
                try grid.withUnsafeMutableBufferPointer { y in
                    try captioner.visual.grid(pixels: x.baseAddress!, into: y.baseAddress!, workspace: workspace)
                }
            }
            stage = .grid(grid)
            clock.lap("backbone")
        }
        guard case .grid(let grid) = stage else { preconditionFailure("every input reaches the grid stage") }
        try checkpoint("concepts")
        let features = try captioner.imageFeatures(grid: grid)
        clock.lap("concepts")
        return features
    }

    /// Decodes the caption tokens of prepared image features (greedy when beamSize is 1).
    package func decode(features: ImageFeatures, options: DecodingOptions,
                        f32Vocabulary: Bool = false) throws -> Hypothesis {
        try decode(features: [features], options: options, f32Vocabulary: f32Vocabulary)[0]
    }

    /// Decodes the captions of several images' features: greedy runs them together, beam search
    /// one by one. `f32Vocabulary` makes cached greedy decoding (and beam search with INT8
    /// fusion weights) use the F32 vocabulary product every step instead of the INT8 one with
    /// exact rescoring (benchmarks and tests compare the two). Both give the exact argmax. The options are
    /// the caller's to validate (`Captioner.validate`).
    package func decode(features: [ImageFeatures], options: DecodingOptions,
                        f32Vocabulary: Bool = false) throws -> [Hypothesis] {
        let contexts = features.map {
            ImageContext(conceptPieces: captioner.conceptSegment($0.concepts), visualTokens: $0.visualTokens)
        }
        let sep = captioner.special.sep
        func session(_ contexts: [ImageContext]) throws -> LogitSession {
            let session: LogitSession
            if options.useCache {
                // Greedy needs the exact argmax only: the INT8 vocabulary product with exact
                // rescoring is the fastest way to it (oneDNN's integer GEMM with VNNI, LightCap's
                // weight-only kernel without). Beam search needs each row's 2 x beam
                // best and the log-softmax normaliser; it reads the INT8 product (those exact, the
                // normaliser within its bound) only with INT8 fusion weights, whose states are
                // approximate already.
                let exactTop = f32Vocabulary ? nil
                    : options.beamSize == 1 ? 1
                    : captioner.fusion.stepWeights == .int8 ? 2 * options.beamSize : nil
                try cached.start(contexts, exactTop: exactTop)
                session = cached
            } else {
                uncached.start(contexts)
                session = uncached
            }
            session.shouldStop = shouldStop
            return session
        }
        if options.beamSize == 1 {
            return try Decoder.greedy(session(contexts), images: contexts.count, sep: sep, maxLength: options.maxLength)
        }
        return try contexts.map {
            try Decoder.beamSearch(session([$0]), sep: sep, beam: options.beamSize, maxLength: options.maxLength)
        }
    }

    /// The bytes of an image file; a missing or unreadable file is an error naming it.
    private static func read(_ url: URL) throws -> Data {
        guard FileManager.default.fileExists(atPath: url.path) else { throw LightCapError.fileNotFound(path: url.path) }
        do { return try FileContents.read(url) } catch {
            let reason = FileManager.default.isReadableFile(atPath: url.path) ? error.localizedDescription : "permission denied"
            throw LightCapError.io(path: url.path, reason: reason)
        }
    }
}
