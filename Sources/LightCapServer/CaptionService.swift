// The work behind the HTTP routes: one shared, read-only Captioner; the captions computed by the
// CaptionBatcher's worker threads (each with its own CaptionSession), which batch concurrent
// requests; each request bounded by its deadline.

import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import LightCap
import LightCapCore
import LightCapImage

/// An error answered as `{"error": message}` with `status` (and `headers`, e.g. Retry-After).
struct APIError: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var message: String
    var headers: HTTPFields = [:]
    var description: String { "\(status.code): \(message)" }
}

/// The caption JSON answered by `POST /v1/caption`.
public struct CaptionResponse: Codable, Sendable, Equatable {
    public struct Concept: Codable, Sendable, Equatable {
        public var name: String
        public var score: Float
    }
    /// The caption text.
    public var caption: String
    /// The Captioner's score (greedy: mean log-probability; beam: length-normalised).
    public var score: Double
    /// WordPiece tokens.
    public var tokens: [String]
    /// Token ids.
    public var tokenIds: [Int]
    /// Concepts that steered the caption, best first.
    public var concepts: [Concept]
    /// Milliseconds per stage (the Captioner's, plus `queue` waiting for a worker and `total`;
    /// `fusion` is the time of the whole batch the image was decoded in).
    public var timings: [String: Double]
    /// The decoding options used.
    public var beam: Int
    public var maxLength: Int
    /// Images decoded together with this one (1: alone).
    public var batchSize: Int

    init(_ caption: Caption, options: DecodingOptions, batchSize: Int, queueMs: Double, totalMs: Double) {
        self.caption = caption.text
        score = caption.score
        tokens = caption.tokens
        tokenIds = caption.tokenIds
        concepts = caption.concepts.map { Concept(name: $0.name, score: $0.score) }
        var t = caption.timings
        t["queue"] = queueMs
        t["total"] = totalMs
        timings = t
        beam = options.beamSize
        maxLength = options.maxLength
        self.batchSize = batchSize
    }
}

/// The model summary answered by `GET /v1/model`.
public struct ModelResponse: Codable, Sendable, Equatable {
    public var name: String
    public var formatVersion: Int
    /// Total number of weights in model.safetensors (nil when the directory is unknown).
    public var parameters: Int?
    public var imageSize: Int
    public var visualTokens: Int
    public var gridChannels: Int
    public var visualLayers: [Int]
    public var concepts: Int
    public var conceptTopK: Int
    public var modulator: Bool
    public var fusionLayers: Int
    public var fusionHiddenSize: Int
    public var fusionHeads: Int
    public var vocabSize: Int
    public var predictionHeads: Int
    public var defaultBeam: Int
    public var defaultMaxLength: Int
    /// Longest `max_length` a request may ask for.
    public var maxMaxLength: Int
}

/// Captions request bodies with the shared Captioner through the batcher's workers.
final class CaptionService: Sendable {
    let captioner: Captioner
    let metrics = ServiceMetrics()
    let configuration: ServerConfiguration
    let batcher: CaptionBatcher
    let model: ModelResponse

    init(captioner: Captioner, configuration: ServerConfiguration) throws {
        self.captioner = captioner
        self.configuration = configuration
        batcher = try CaptionBatcher(
            captioner: captioner, workers: configuration.maxConcurrentCaptions, maxBatch: configuration.maxBatchSize,
            window: configuration.batchWindow, maxWaiting: configuration.maxQueuedRequests,
            imageLimits: ImageLimits(maxPixels: configuration.maxPixels), metrics: metrics)
        let c = captioner.configuration
        var parameters: Int?
        if let url = configuration.modelDirectory {
            let weights = try ModelDirectory(url: url).openWeights()
            parameters = weights.parameterCount
        }
        model = ModelResponse(
            name: c.name, formatVersion: c.formatVersion, parameters: parameters, imageSize: c.image.size,
            visualTokens: c.visualTokens, gridChannels: c.gridChannels, visualLayers: c.visual.layers,
            concepts: captioner.conceptNames.count, conceptTopK: c.concepts.enabled ? c.concepts.topK : 0,
            modulator: c.concepts.enabled && c.modulator.enabled,
            fusionLayers: c.fusion.numHiddenLayers, fusionHiddenSize: c.fusion.hiddenSize,
            fusionHeads: c.fusion.numAttentionHeads, vocabSize: c.fusion.vocabSize, predictionHeads: c.heads.count,
            defaultBeam: min(max(1, c.decoding.beamSize), configuration.maxBeamSize),
            defaultMaxLength: min(max(1, c.decoding.maxLength), c.decoding.longestCaption),
            maxMaxLength: c.decoding.longestCaption)
    }

    deinit { batcher.stop() }

    /// Parses `beam` and `max_length`; anything else in the query is an error (typos surface).
    func options(query: [(key: String, value: String)]) throws -> DecodingOptions {
        var options = DecodingOptions(beamSize: model.defaultBeam, maxLength: model.defaultMaxLength)
        var seen = Set<String>()
        for (key, value) in query {
            guard seen.insert(key).inserted else {
                throw APIError(status: .badRequest, message: "query parameter '\(key)' is given twice")
            }
            switch key {
            case "beam":
                guard let n = Int(value), (1...configuration.maxBeamSize).contains(n) else {
                    throw APIError(status: .badRequest,
                                   message: "beam must be an integer in 1...\(configuration.maxBeamSize), got '\(value)'")
                }
                options.beamSize = n
            case "max_length":
                guard let n = Int(value), (1...model.maxMaxLength).contains(n) else {
                    throw APIError(status: .badRequest,
                                   message: "max_length must be an integer in 1...\(model.maxMaxLength), got '\(value)'")
                }
                options.maxLength = n
            default:
                throw APIError(status: .badRequest, message: "unknown query parameter '\(key)' (known: beam, max_length)")
            }
        }
        return options
    }

    private let draining = CancelFlag()

    /// True once a graceful shutdown has begun.
    var isDraining: Bool { draining.isSet }

    /// Refuses new captions from now on (the accepted ones finish).
    func startDraining() { draining.set() }

    /// Captions `data` on a worker thread, within `requestTimeout`: past it the answer is 503 at
    /// once and the work stops (still waiting, it never starts; in a batch, the batch stops at its
    /// next step once all its requests are past their deadlines).
    func caption(_ data: Data, options: DecodingOptions) async throws -> CaptionResponse {
        guard !isDraining else { throw APIError(status: .serviceUnavailable, message: "draining: the server is shutting down") }
        let start = DispatchTime.now()
        let job = CancelFlag()
        let timeout = configuration.requestTimeout
        return try await withDeadline(seconds: timeout, onTimeout: {
            APIError(status: .serviceUnavailable, message: String(format: "timed out after %g s (waiting and captioning)", timeout))
        }, afterTimeout: {
            job.set()  // after the answer: the work's own "cancelled" never wins the race
        }) {
            try await self.run(data, options: options, job: job, start: start)
        }
    }

    /// Queues `data` for the batcher's workers and waits for its caption.
    private func run(_ data: Data, options: DecodingOptions, job: CancelFlag, start: DispatchTime) async throws -> CaptionResponse {
        let (result, started, batchSize) = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<(Result<Caption, any Error>, DispatchTime, Int), any Error>) in
            let accepted = batcher.submit(.init(data: data, options: options, cancel: job) {
                continuation.resume(returning: ($0, $1, $2))
            })
            if !accepted {
                var headers = HTTPFields()
                headers[.retryAfter] = "1"
                continuation.resume(throwing: APIError(
                    status: .serviceUnavailable,
                    message: "server busy: \(configuration.maxQueuedRequests) requests already waiting", headers: headers))
            }
        }
        let caption = try result.get()
        let end = DispatchTime.now()
        func ms(_ a: DispatchTime, _ b: DispatchTime) -> Double { Double(b.uptimeNanoseconds - a.uptimeNanoseconds) / 1e6 }
        let response = CaptionResponse(caption, options: options, batchSize: batchSize, queueMs: ms(start, started),
                                       totalMs: ms(start, end))
        metrics.caption(timings: response.timings)
        return response
    }
}

/// Runs `work` against a deadline: `work`'s result when it ends within `seconds`, else, at once,
/// the error `onTimeout` makes (while `work` runs on unawaited). `afterTimeout` runs once that
/// answer is given: where to tell `work` to stop, so that its own failure (e.g. "cancelled")
/// can never be the answer instead.
func withDeadline<T: Sendable>(seconds: Double, onTimeout: @escaping @Sendable () -> any Error,
                               afterTimeout: @escaping @Sendable () -> Void = {},
                               _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    let answer = OnceContinuation<T>()
    return try await withCheckedThrowingContinuation { continuation in
        answer.set(continuation)
        let deadline = Task {
            do { try await Task.sleep(nanoseconds: UInt64(max(seconds, 0) * 1e9)) } catch { return }  // answered in time
            guard !answer.isResumed else { return }
            answer.resume(.failure(onTimeout()))
            afterTimeout()
        }
        Task {
            do { answer.resume(.success(try await work())) } catch { answer.resume(.failure(error)) }
            deadline.cancel()
        }
    }
}

/// Resumes a continuation once: the first of the work and the deadline wins.
final class OnceContinuation<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?
    private var resumed = false
    private var early: Result<T, any Error>?

    func set(_ c: CheckedContinuation<T, any Error>) {
        lock.lock()
        if let early { lock.unlock(); c.resume(with: early); return }
        continuation = c
        lock.unlock()
    }

    var isResumed: Bool { lock.lock(); defer { lock.unlock() }; return resumed }

    func resume(_ result: Result<T, any Error>) {
        lock.lock()
        guard !resumed else { lock.unlock(); return }
        resumed = true
        if let c = continuation {
            continuation = nil
            lock.unlock()
            c.resume(with: result)
        } else {
            early = result
            lock.unlock()
        }
    }
}

/// A flag set once, read from any thread (draining; a request's cancellation).
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
