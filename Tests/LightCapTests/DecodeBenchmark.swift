// Decode benchmark (not a test: skipped unless LIGHTCAP_BENCH names a folder written by
// scripts/bench_decode.py, which runs it and prints the table beside PyTorch and ONNX Runtime).
// Prints one line `BENCH {json}` with median milliseconds per workload and the decoded ids.
// LIGHTCAP_BENCH_PROFILE=n runs only n cached greedy decodes (for `perf record`, docs/DECODING.md).
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
            return Statistics.median(times)
        }
        let features = try captioner.imageFeatures(grid: grid)
        if let runs = Int(ProcessInfo.processInfo.environment["LIGHTCAP_BENCH_PROFILE"] ?? "") {
            for _ in 0..<runs { _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true)) }
            return
        }
        var timings: [String: Double] = [:]
        timings["Swift image features (concepts, modulator, projection)"] = try median(repeats) { _ = try captioner.imageFeatures(grid: grid) }
        let greedy = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        timings["greedy 20, Swift cached (default: \(QuantizedDecoder.hasVNNI ? "INT8" : "F32") vocabulary here)"] = try median(repeats) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        }
        timings["greedy 20, Swift cached, INT8 vocabulary"] = try median(repeats) {
            _ = try captioner.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true), f32Vocabulary: false)
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
        // After the loop: the exact log-softmax normalisers, one F32 product over the 20 steps' states.
        let state = states.scalars
        let steps = Tensor(shape: [20, state.count], generator: { state[$0 % state.count] })
        timings["  stage: after the loop, exact scores (F32 vocabulary, 20 rows)"] = median(repeats) {
            _ = captioner.heads.decode(transformed: steps)
        }
        // The same pass whole (product + 20 log-sum-exps), fast and through the plain twins (sgemm
        // on the row-major decoder, libm's exp in Double), in the same run.
        func exactScores(_ logits: Tensor, _ lse: (UnsafeBufferPointer<Float>) -> Double) -> [Double] {
            let v = logits.shape[1]
            return logits.withUnsafeBufferPointer { p in (0..<logits.shape[0]).map { lse(UnsafeBufferPointer(rebasing: p[($0 * v)..<(($0 + 1) * v)])) } }
        }
        timings["  stage: exact scores, 20 rows: packed matmul + SIMD log-sum-exp"] = median(repeats) {
            _ = exactScores(captioner.heads.decode(transformed: steps), LogSoftmax.logSumExp)
        }
        timings["  stage: exact scores, 20 rows: plain twins (sgemm + libm exp)"] = median(repeats) {
            _ = exactScores(captioner.heads.decodePlain(transformed: steps), LogSoftmax.logSumExpReference)
        }
        // The memory floor of a step: one read of as many bytes as a step's weights (F32 layers,
        // head transforms, INT8 vocabulary + its per-row arrays), from a buffer that is not the model's.
        let f = captioner.configuration.fusion, d = f.hiddenSize
        let layerFloats = f.numHiddenLayers * (4 * d * d + 2 * d * f.intermediateSize)
        let stepBytes = 4 * layerFloats + 4 * captioner.configuration.heads.count * d * d + f.vocabSize * (d + 16)
        let stream = [Float](repeating: 1, count: stepBytes / 4)
        var sink: Float = 0
        timings["  stage: read \(stepBytes / 1_000_000) MB once (a step's weights' bytes)"] = median(repeats) {
            sink += stream.withUnsafeBufferPointer { p in
                var acc = SIMD16<Float>()
                let base = UnsafeRawPointer(p.baseAddress!)
                for i in 0..<(p.count / 16) { acc += base.loadUnaligned(fromByteOffset: i * 64, as: SIMD16<Float>.self) }
                return acc.sum()
            }
        }
        XCTAssertGreaterThan(sink, 0)
        let row = captioner.heads.decode(transformed: states).scalars
        timings["  stage: one step, log-sum-exp"] = median(repeats) { _ = row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) } }

        // The same cached greedy decode, timed stage by stage inside the loop (the stages above run
        // alone, their weights warm in the cache; here each step evicts the others' weights).
        var inLoop: [String: [Double]] = [:]
        for _ in 0..<max(repeats, 1) {
            var parts: [String: Double] = [:]
            func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
                let t = threadCPUTime()
                defer { parts[name, default: 0] += (threadCPUTime() - t) * 1e3 }
                return try body()
            }
            let start = threadCPUTime()
            let image = try timed("image keys/values") {
                try captioner.fusion.imageCache(conceptTokens: context.conceptPieces.map { $0 + [captioner.special.sep] } ?? [],
                                                visualTokens: context.visualTokens, captionSegmentLength: a)
            }
            var cache = CaptionCache(image: image)
            var token = captioner.special.cls
            var chosen: [Int] = [], recorded: [Tensor] = []
            for _ in 0..<20 {
                // Timed inline: the cache is moved into the step (a closure would have to copy it).
                let stepStart = threadCPUTime()
                let (hidden, grown) = try captioner.fusion.step(caches: [consume cache], tokens: [token], maskID: captioner.special.mask)
                parts["steps: 2 rows through the layers", default: 0] += (threadCPUTime() - stepStart) * 1e3
                cache = grown[0]
                let states = timed("steps: head transforms") { captioner.heads.transformed(hidden) }
                let logits = timed("steps: vocabulary INT8 + exact rescoring") { captioner.heads.argmaxExactLogits(transformed: states)[0] }
                token = timed("steps: argmax") { logits.withUnsafeBufferPointer { FastMath.firstIndexOfMax($0) } }
                chosen.append(token)
                recorded.append(states)
            }
            _ = timed("after the loop: exact scores (F32 vocabulary, 20 rows)") {
                let all = Tensor(shape: [recorded.count, recorded[0].shape[1]], scalars: recorded.flatMap(\.scalars))
                let logits = captioner.heads.decode(transformed: all)
                return logits.withUnsafeBufferPointer { p in
                    chosen.indices.map { i in LogSoftmax.logSumExp(UnsafeBufferPointer(rebasing: p[(i * logits.shape[1])..<((i + 1) * logits.shape[1])])) }
                }
            }
            XCTAssertEqual(chosen, greedy.tokens, "the timed loop decodes what Decoder.greedy does")
            parts["total"] = (threadCPUTime() - start) * 1e3
            for (k, v) in parts { inLoop[k, default: []].append(v) }
        }
        for (k, v) in inLoop { timings["  in loop: " + k] = v.sorted()[v.count / 2] }

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
