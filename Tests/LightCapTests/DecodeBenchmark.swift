// Decode benchmark (not a test: skipped unless LIGHTCAP_BENCH names a folder written by
// scripts/bench_decode.py, which runs it and prints the table beside PyTorch and ONNX Runtime).
// Prints one line `BENCH {json}` with median milliseconds per workload and the decoded ids.
import Foundation
import XCTest
import LightCapCore
@testable import LightCapModel
@testable import LightCap

final class DecodeBenchmark: XCTestCase {
    func testDecodeBenchmark() throws {
        guard let folder = ProcessInfo.processInfo.environment["LIGHTCAP_BENCH"] else {
            throw XCTSkip("benchmark: set LIGHTCAP_BENCH (scripts/bench_decode.py does)")
        }
        let repeats = Int(ProcessInfo.processInfo.environment["LIGHTCAP_BENCH_REPEATS"] ?? "") ?? 5
        let root = URL(fileURLWithPath: folder)
        let captioner = try Captioner(modelDirectory: root.appendingPathComponent("model"), threads: 1)
        let grid = try SafetensorsFile(url: root.appendingPathComponent("grid.safetensors")).tensor(named: "grid").owned()
        Threads.set(1)

        // Median thread CPU time (the machine is shared: CPU time is steadier than wall time).
        func median(_ runs: Int, _ body: () throws -> Void) rethrows -> Double {
            try body()  // warm up
            var times: [Double] = []
            for _ in 0..<max(runs, 1) {
                let start = threadCPUTime()
                try body()
                times.append((threadCPUTime() - start) * 1e3)
            }
            return times.sorted()[times.count / 2]
        }
        let features = try captioner.imageFeatures(grid: grid)
        var timings: [String: Double] = [:]
        timings["Swift image features (concepts, modulator, projection)"] = try median(repeats) { _ = try captioner.imageFeatures(grid: grid) }
        let greedy = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        timings["greedy 20, Swift cached"] = try median(repeats) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        }
        timings["greedy 20, Swift cached, F32 vocabulary"] = try median(repeats) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true), f32Vocabulary: true)
        }
        timings["greedy 20, Swift uncached"] = try median(max(repeats / 2, 1)) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: false))
        }
        let beam = try captioner.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        timings["beam 5, Swift cached"] = try median(repeats) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        }
        timings["beam 5, Swift uncached"] = try median(1) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: false))
        }
        // Per stage of one cached greedy step (base: 2 rows through 4 layers, then the vocabulary).
        let context = ImageContext(conceptPieces: captioner.conceptSegment(features.concepts), visualTokens: features.visualTokens)
        let a = captioner.configuration.decoding.captionSegmentLength
        var session: CachedSession?
        timings["  stage: image keys/values (concept + visual rows, once)"] = try median(repeats) {
            session = try CachedSession(fusion: captioner.fusion, heads: captioner.heads, special: captioner.special,
                                        context: context, captionSegmentLength: a)
        }
        var hidden = Tensor(zeros: [1, captioner.fusion.hiddenSize])
        timings["  stage: one step, 2 rows through the layers"] = try median(repeats) {
            (hidden, _) = try captioner.fusion.step(caches: [CaptionCache(image: session!.image)], tokens: [captioner.special.cls],
                                                   maskID: captioner.special.mask)
        }
        let states = captioner.heads.transformed(hidden)
        timings["  stage: one step, head transforms"] = median(repeats) { _ = captioner.heads.transformed(hidden) }
        timings["  stage: one step, vocabulary INT8 + exact rescoring"] = median(repeats) {
            _ = captioner.heads.argmaxExactLogits(transformed: states)
        }
        timings["  stage: one step, vocabulary F32 (reference twin)"] = median(repeats) {
            _ = captioner.heads.decode(transformed: states)
        }
        let row = captioner.heads.decode(transformed: states).scalars
        timings["  stage: one step, log-sum-exp"] = median(repeats) { _ = row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) } }

        let report: [String: Any] = ["timings": timings, "greedy_ids": greedy.tokens, "beam_ids": beam.tokens]
        let json = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print("BENCH " + String(decoding: json, as: UTF8.self))
    }
}

/// CPU seconds used by the calling thread.
func threadCPUTime() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
