// CaptionBatcher: the service's caption workers and their queue. Requests wait in one bounded
// FIFO queue; each of `workers` threads owns a CaptionSession and, when free, takes the oldest
// request together with up to `maxBatch - 1` later ones that ask for the same decoding options.
// While another worker is busy (the service is under load) it waits at most `window` after the
// oldest arrived for companions (no waiting once `maxBatch` are there); with all others idle it
// starts at once. The batch is captioned in one call (`CaptionSession.captions`): each image
// through the backbone on its own, then greedy decoding of all of them through the fusion model
// together, with the tokens of one at a time. `maxBatch` 1 is one request at a time. The CPU
// work runs on these threads, never on the NIO event loops or the cooperative pool.

import Dispatch
import Foundation
import LightCap
import LightCapCore
import LightCapImage

/// A bounded queue of caption requests served in batches by worker threads.
final class CaptionBatcher: @unchecked Sendable {
    /// One request's image.
    struct Job {
        let data: Data
        let options: DecodingOptions
        /// Set when the request's deadline has passed: dropped if still waiting, and a batch
        /// whose requests are all cancelled stops at its next step.
        let cancel: CancelFlag
        /// Called once on a worker thread: the caption or the image's error, when the batch
        /// started, and how many images it held.
        let done: @Sendable (Result<Caption, any Error>, _ started: DispatchTime, _ batchSize: Int) -> Void
        let arrived = DispatchTime.now()
    }

    let workers: Int
    let maxBatch: Int
    /// Seconds a free worker waits after the oldest request arrived for more to batch with it
    /// (only while another worker is busy).
    let window: Double
    /// Requests that may wait beyond those a free worker is about to take.
    let maxWaiting: Int
    private let metrics: ServiceMetrics
    private let condition = NSCondition()
    private var queue: [Job] = []
    /// Workers running a batch, and requests in those batches.
    private var busyWorkers = 0, activeJobs = 0
    /// Worker slots taken out of service (`hold`, for tests of a full queue).
    private var held = 0
    /// Set by `stop`: the workers finish their batch and end.
    private var stopping = false

    /// Starts `workers` threads, each with its own session of `captioner`; each session first
    /// captions a small synthetic image, so that the first request does not pay for oneDNN's
    /// kernel generation.
    init(captioner: Captioner, workers: Int, maxBatch: Int, window: Double, maxWaiting: Int,
         imageLimits: ImageLimits, metrics: ServiceMetrics) throws {
        self.workers = max(1, workers)
        self.maxBatch = max(1, maxBatch)
        self.window = max(0, window)
        self.maxWaiting = max(0, maxWaiting)
        self.metrics = metrics
        for i in 0..<self.workers {
            let session = try captioner.makeSession()
            _ = try session.caption(image: Self.warmUpImage)
            session.imageLimits = imageLimits
            nonisolated(unsafe) let owned = session  // used by this thread alone
            let thread = Thread { self.work(owned) }  // holds the batcher until `stop`
            thread.name = "lightcap-caption-\(i)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    private static let warmUpImage: RGBImage = {
        let side = 64
        return RGBImage(width: side, height: side, pixels: (0..<(side * side * 3)).map { UInt8(($0 * 7) % 251) })
    }()

    /// Queues `job`; false (the job dropped) when the queue is full.
    func submit(_ job: Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let free = max(0, workers - busyWorkers - held)
        guard queue.count < maxWaiting + free * maxBatch else { return false }
        queue.append(job)
        condition.broadcast()
        return true
    }

    /// Requests in running batches, and requests waiting.
    var load: (active: Int, waiting: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (activeJobs, queue.count)
    }

    /// Takes one worker slot out of service until `release` (tests of a full queue).
    func hold() {
        condition.lock()
        held += 1
        condition.unlock()
    }

    func release() {
        condition.lock()
        held -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Ends the workers once their batches are done; waiting requests fail as cancelled.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func work(_ session: CaptionSession) {
        while true {
            let (next, dropped) = nextBatch()
            for job in dropped { job.done(.failure(LightCapError.cancelled(stage: "the queue")), .now(), 0) }
            guard let batch = next else { return }
            if batch.isEmpty { continue }
            let started = DispatchTime.now()
            session.shouldStop = { batch.allSatisfy { $0.cancel.isSet } }
            let results: [Result<Caption, any Error>]
            do {
                results = try session.captions(imageData: batch.map(\.data), options: batch[0].options)
            } catch {
                results = Array(repeating: .failure(error), count: batch.count)
            }
            metrics.batch(size: batch.count)
            condition.lock()
            busyWorkers -= 1
            activeJobs -= batch.count
            condition.broadcast()
            condition.unlock()
            for (job, result) in zip(batch, results) { job.done(result, started, batch.count) }
        }
    }

    /// Blocks until this worker may run a batch, and takes it from the queue; also returns the
    /// cancelled requests it dropped (to be answered outside the lock; their clients already had
    /// the deadline's answer). nil: stop.
    private func nextBatch() -> (batch: [Job]?, dropped: [Job]) {
        condition.lock()
        defer { condition.unlock() }
        while true {
            let dropped = queue.filter { $0.cancel.isSet || stopping }
            if !dropped.isEmpty {
                queue.removeAll { $0.cancel.isSet || stopping }
                return ([], dropped)
            }
            if stopping { return (nil, []) }
            guard let first = queue.first, busyWorkers + held < workers else {
                condition.wait()
                continue
            }
            let companions = queue.indices.filter { queue[$0].options == first.options }.prefix(maxBatch)
            let due = first.arrived.uptimeNanoseconds + UInt64(window * 1e9)
            let now = DispatchTime.now().uptimeNanoseconds
            // With every other worker idle there is no load to batch: no waiting (a lone client
            // pays no window).
            if companions.count == maxBatch || now >= due || busyWorkers == 0 {
                let batch = companions.map { queue[$0] }
                for i in companions.reversed() { queue.remove(at: i) }
                busyWorkers += 1
                activeJobs += batch.count
                return (batch, [])
            }
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(due - now) / 1e9))
        }
    }
}
