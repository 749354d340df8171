// The work behind the HTTP routes: one shared, read-only Captioner; per-request state in pooled
// CaptionSessions (SessionPool); concurrency bounded by an async limiter (no global lock); the
// CPU work runs on Dispatch worker threads, never on the NIO event loops or the cooperative pool.

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

/// A counting async semaphore: at most `limit` holders, at most `maxWaiting` waiters (FIFO).
actor AsyncLimiter {
    let limit: Int
    let maxWaiting: Int
    private var active = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int, maxWaiting: Int) {
        self.limit = max(1, limit)
        self.maxWaiting = max(0, maxWaiting)
    }

    /// Takes a slot, waiting in line if none is free; false when the line is full.
    func acquire() async -> Bool {
        if active < limit {
            active += 1
            return true
        }
        guard waiters.count < maxWaiting else { return false }
        await withCheckedContinuation { waiters.append($0) }
        return true  // the releasing holder handed its slot over
    }

    /// Gives a slot back (to the first waiter, if any).
    func release() {
        if waiters.isEmpty {
            active -= 1
        } else {
            waiters.removeFirst().resume()
        }
    }

    /// Slots in use and requests waiting (for tests and `GET /v1/health`).
    var load: (active: Int, waiting: Int) { (active, waiters.count) }
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
    /// Milliseconds per stage (the Captioner's, plus `queue` waiting for a slot and `total`).
    public var timings: [String: Double]
    /// The decoding options used.
    public var beam: Int
    public var maxLength: Int

    init(_ caption: Caption, options: DecodingOptions, queueMs: Double, totalMs: Double) {
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

/// Captions request bodies with the shared Captioner under the concurrency limit.
final class CaptionService: Sendable {
    let captioner: Captioner
    let sessions: SessionPool
    let metrics = ServiceMetrics()
    let configuration: ServerConfiguration
    let limiter: AsyncLimiter
    let model: ModelResponse
    private static let workQueue = DispatchQueue(label: "lightcap.server.caption", qos: .userInitiated,
                                                 attributes: .concurrent)

    init(captioner: Captioner, configuration: ServerConfiguration) throws {
        self.captioner = captioner
        sessions = SessionPool(captioner: captioner)
        self.configuration = configuration
        limiter = AsyncLimiter(limit: configuration.maxConcurrentCaptions, maxWaiting: configuration.maxQueuedRequests)
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

    /// One caption of a small synthetic image, so that the first request does not pay for
    /// oneDNN's kernel generation.
    func warmUp() throws {
        let side = 64
        let pixels = (0..<(side * side * 3)).map { UInt8(($0 * 7) % 251) }
        _ = try sessions.withSession { try $0.caption(image: RGBImage(width: side, height: side, pixels: pixels)) }
    }

    /// Captions `data` once a slot is free, on a worker thread, within `requestTimeout`: past
    /// it the answer is 503 at once and the work stops at its next step (or, still waiting for
    /// a slot, never starts).
    func caption(_ data: Data, options: DecodingOptions) async throws -> CaptionResponse {
        guard !isDraining else { throw APIError(status: .serviceUnavailable, message: "draining: the server is shutting down") }
        let start = DispatchTime.now()
        let job = CancelFlag()
        let answer = OnceContinuation<CaptionResponse>()
        let timeout = configuration.requestTimeout
        return try await withCheckedThrowingContinuation { continuation in
            answer.set(continuation)
            let deadline = Task {
                do { try await Task.sleep(nanoseconds: UInt64(max(timeout, 0) * 1e9)) } catch { return }  // answered in time
                guard !answer.isResumed else { return }
                job.set()
                answer.resume(.failure(APIError(status: .serviceUnavailable,
                                                message: String(format: "timed out after %g s (waiting and captioning)", timeout))))
            }
            Task {
                do { answer.resume(.success(try await self.run(data, options: options, job: job, start: start))) } catch {
                    answer.resume(.failure(error))
                }
                deadline.cancel()
            }
        }
    }

    /// Waits for a slot, then captions on a worker thread (the slot is given back there).
    private func run(_ data: Data, options: DecodingOptions, job: CancelFlag, start: DispatchTime) async throws -> CaptionResponse {
        guard await limiter.acquire() else {
            var headers = HTTPFields()
            headers[.retryAfter] = "1"
            throw APIError(status: .serviceUnavailable,
                           message: "server busy: \(configuration.maxQueuedRequests) requests already waiting", headers: headers)
        }
        let queued = DispatchTime.now()
        let sessions = self.sessions
        let limits = ImageLimits(maxPixels: configuration.maxPixels)
        let result: Result<Caption, any Error> = await withCheckedContinuation { continuation in
            Self.workQueue.async {
                continuation.resume(returning: Result {
                    if job.isSet { throw LightCapError.cancelled(stage: "the queue") }
                    return try sessions.withSession { session in
                        session.shouldStop = { job.isSet }
                        session.imageLimits = limits
                        defer { session.shouldStop = { false } }
                        return try session.caption(imageData: data, options: options)
                    }
                })
            }
        }
        await limiter.release()
        let caption = try result.get()
        let end = DispatchTime.now()
        func ms(_ a: DispatchTime, _ b: DispatchTime) -> Double { Double(b.uptimeNanoseconds - a.uptimeNanoseconds) / 1e6 }
        let response = CaptionResponse(caption, options: options, queueMs: ms(start, queued), totalMs: ms(start, end))
        metrics.caption(timings: response.timings)
        return response
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
