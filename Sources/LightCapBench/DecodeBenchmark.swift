// DecodeBenchmark (`lightcap bench decode`): the fusion model's caption decoding on a folder
// written by scripts/bench_decode.py (model/ and grid.safetensors), which prints the table beside
// PyTorch and ONNX Runtime: median thread CPU milliseconds of each workload (greedy also in
// batches of 4 and 16 images; greedy and beam 5 also with INT8 fusion weights), the stages of
// one cached greedy step alone and inside the loop, and the decoded ids (the script checks them).

import Foundation
import LightCap
import LightCapCore
import LightCapModel

public enum DecodeBenchmark {
    /// Median milliseconds per workload and the tokens greedy and beam 5 decoded.
    public struct Report: Codable, Sendable {
        public var timings: [String: Double]
        public var greedyIds: [Int]
        public var beamIds: [Int]
        /// The same decodes with INT8 fusion weights (`--fusion-weights int8`).
        public var greedyIdsInt8Fusion: [Int]
        public var beamIdsInt8Fusion: [Int]

        enum CodingKeys: String, CodingKey {
            case timings
            case greedyIds = "greedy_ids"
            case beamIds = "beam_ids"
            case greedyIdsInt8Fusion = "greedy_ids_int8_fusion"
            case beamIdsInt8Fusion = "beam_ids_int8_fusion"
        }
    }

    /// Runs every workload `repeats` times (median of thread CPU time). `profileRuns`: only that
    /// many cached decodes, nothing timed (for `perf record`, docs/DECODING.md), with
    /// `profileWeights` fusion weights and beam width `profileBeam`; nil then.
    public static func run(folder root: URL, repeats: Int = 5, profileRuns: Int? = nil,
                           profileWeights: FusionWeights = .f32, profileBeam: Int = 1) throws -> Report? {
        let captioner = try Captioner(modelDirectory: root.appendingPathComponent("model"), threads: 1,
                                      fusionWeights: profileRuns == nil ? .f32 : profileWeights)
        let session = try captioner.makeSession()
        let grid = try SafetensorsFile(url: root.appendingPathComponent("grid.safetensors")).tensor(named: "grid").owned()
        Threads.set(1)
        func median(_ runs: Int, _ body: () throws -> Void) rethrows -> Double {
            try Statistics.medianTime(runs, clock: Clock.threadCPUMs, body)
        }
        let features = try captioner.imageFeatures(grid: grid)
        if let runs = profileRuns {
            for _ in 0..<runs { _ = try session.decode(features: features, options: .init(beamSize: profileBeam, maxLength: 20, useCache: true)) }
            return nil
        }
        var timings: [String: Double] = [:]
        timings["Swift image features (concepts, modulator, projection)"] = try median(repeats) { _ = try captioner.imageFeatures(grid: grid) }
        let greedy = try session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        timings["greedy 20, Swift cached (default: INT8 vocabulary, \(QuantizedDecoder.hasVNNI ? "oneDNN's integer GEMM" : "weight-only kernel") here)"] = try median(repeats) {
            _ = try session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        }
        for batch in [4, 16] {
            // The same image `batch` times as one batch (CaptionSession.decode runs their steps
            // together): milliseconds per image.
            let many = Array(repeating: features, count: batch)
            let tokens = try session.decode(features: many, options: .init(beamSize: 1, maxLength: 20, useCache: true)).map(\.tokens)
            guard tokens.allSatisfy({ $0 == greedy.tokens }) else {
                throw LightCapError.invalidArgument(reason: "batched greedy decoding differs from one at a time")
            }
            timings["greedy 20, Swift cached, batch of \(batch), per image"] = try median(repeats) {
                _ = try session.decode(features: many, options: .init(beamSize: 1, maxLength: 20, useCache: true))
            } / Double(batch)
        }
        timings["greedy 20, Swift cached, INT8 vocabulary"] = try median(repeats) {
            _ = try session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true), f32Vocabulary: false)
        }
        timings["greedy 20, Swift cached, F32 vocabulary"] = try median(repeats) {
            _ = try session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true), f32Vocabulary: true)
        }
        timings["greedy 20, Swift uncached"] = try median(max(repeats / 2, 1)) {
            _ = try session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: false))
        }
        let beam = try session.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        timings["beam 5, Swift cached"] = try median(repeats) {
            _ = try session.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        }
        // The same decodes with weight-only INT8 fusion layers in the steps.
        let int8Captioner = try Captioner(modelDirectory: root.appendingPathComponent("model"), threads: 1, fusionWeights: .int8)
        let int8Session = try int8Captioner.makeSession()
        let greedyInt8 = try int8Session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        let beamInt8 = try int8Session.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        timings["greedy 20, Swift cached, INT8 fusion weights (default vocabulary)"] = try median(repeats) {
            _ = try int8Session.decode(features: features, options: .init(beamSize: 1, maxLength: 20, useCache: true))
        }
        timings["beam 5, Swift cached, INT8 fusion weights"] = try median(repeats) {
            _ = try int8Session.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: true))
        }
        timings["beam 5, Swift uncached"] = try median(1) {
            _ = try session.decode(features: features, options: .init(beamSize: 5, maxLength: 20, useCache: false))
        }
        // Per stage of one cached greedy step (base: 2 rows through 4 layers, then the vocabulary).
        let context = ImageContext(conceptPieces: captioner.conceptSegment(features.concepts), visualTokens: features.visualTokens)
        let a = captioner.configuration.decoding.captionSegmentLength
        let cachedSession = CachedSession(fusion: captioner.fusion, heads: captioner.heads, special: captioner.special,
                                          captionSegmentLength: a)
        timings["  stage: image keys/values (concept + visual rows, once)"] = try median(repeats) {
            try cachedSession.start([context], exactTop: nil)
        }
        var hidden = Tensor(zeros: [1, captioner.fusion.hiddenSize])
        timings["  stage: one step, 2 rows through the layers"] = try median(repeats) {
            (hidden, _) = try captioner.fusion.step(caches: [CaptionCache(image: cachedSession.images[0])], tokens: [captioner.special.cls],
                                                   maskID: captioner.special.mask)
        }
        timings["  stage: one step, 2 rows through the layers, INT8 fusion weights"] = try median(repeats) {
            _ = try int8Captioner.fusion.step(caches: [CaptionCache(image: cachedSession.images[0])], tokens: [captioner.special.cls],
                                              maskID: captioner.special.mask)
        }
        let states = captioner.heads.transformed(hidden)
        timings["  stage: one step, head transforms"] = median(repeats) { _ = captioner.heads.transformed(hidden) }
        timings["  stage: one step, vocabulary INT8 + exact rescoring"] = median(repeats) {
            _ = captioner.heads.argmaxExactLogits(transformed: states)
        }
        timings["  stage: one step, vocabulary F32 (reference twin)"] = median(repeats) {
            _ = captioner.heads.vocabularyLogits(transformed: states)
        }
        // After the loop: the exact log-softmax normalisers, one F32 product over the 20 steps' states.
        let state = states.scalars
        let steps = Tensor(shape: [20, state.count], generator: { state[$0 % state.count] })
        timings["  stage: after the loop, exact scores (F32 vocabulary, 20 rows)"] = median(repeats) {
            _ = captioner.heads.vocabularyLogits(transformed: steps)
        }
        // The same pass whole (product + 20 log-sum-exps), fast and through the plain twins (sgemm
        // on the row-major decoder, libm's exp in Double), in the same run.
        func exactScores(_ logits: Tensor, _ lse: (UnsafeBufferPointer<Float>) -> Double) -> [Double] {
            let v = logits.shape[1]
            return logits.withUnsafeBufferPointer { p in (0..<logits.shape[0]).map { lse(UnsafeBufferPointer(rebasing: p[($0 * v)..<(($0 + 1) * v)])) } }
        }
        timings["  stage: exact scores, 20 rows: packed matmul + SIMD log-sum-exp"] = median(repeats) {
            _ = exactScores(captioner.heads.vocabularyLogits(transformed: steps), LogSoftmax.logSumExp)
        }
        timings["  stage: exact scores, 20 rows: plain twins (sgemm + libm exp)"] = median(repeats) {
            _ = exactScores(captioner.heads.vocabularyLogitsPlain(transformed: steps), LogSoftmax.logSumExpReference)
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
        if sink.isNaN { print("") }  // keeps the read
        let row = captioner.heads.vocabularyLogits(transformed: states).scalars
        timings["  stage: one step, log-sum-exp"] = median(repeats) { _ = row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) } }

        // The same cached greedy decode, timed stage by stage inside the loop (the stages above run
        // alone, their weights warm in the cache; here each step evicts the others' weights).
        var inLoop: [String: [Double]] = [:]
        for _ in 0..<max(repeats, 1) {
            var parts: [String: Double] = [:]
            func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
                let t = Clock.threadCPUMs()
                defer { parts[name, default: 0] += (Clock.threadCPUMs() - t) }
                return try body()
            }
            let start = Clock.threadCPUMs()
            let image = try timed("image keys/values") {
                try captioner.fusion.imageCache(conceptTokens: context.conceptPieces.map { $0 + [captioner.special.sep] } ?? [],
                                                visualTokens: context.visualTokens, captionSegmentLength: a)
            }
            var cache = CaptionCache(image: image)
            var token = captioner.special.cls
            var chosen: [Int] = [], recorded: [Tensor] = []
            for _ in 0..<20 {
                // Timed inline: the cache is moved into the step (a closure would have to copy it).
                let stepStart = Clock.threadCPUMs()
                let (hidden, grown) = try captioner.fusion.step(caches: [consume cache], tokens: [token], maskID: captioner.special.mask)
                parts["steps: 2 rows through the layers", default: 0] += (Clock.threadCPUMs() - stepStart)
                cache = grown[0]
                let states = timed("steps: head transforms") { captioner.heads.transformed(hidden) }
                let logits = timed("steps: vocabulary INT8 + exact rescoring") { captioner.heads.argmaxExactLogits(transformed: states)[0] }
                token = timed("steps: argmax") { logits.withUnsafeBufferPointer { FastMath.firstIndexOfMax($0) } }
                chosen.append(token)
                recorded.append(states)
            }
            _ = timed("after the loop: exact scores (F32 vocabulary, 20 rows)") {
                let all = Tensor(shape: [recorded.count, recorded[0].shape[1]], scalars: recorded.flatMap(\.scalars))
                let logits = captioner.heads.vocabularyLogits(transformed: all)
                return logits.withUnsafeBufferPointer { p in
                    chosen.indices.map { i in LogSoftmax.logSumExp(UnsafeBufferPointer(rebasing: p[(i * logits.shape[1])..<((i + 1) * logits.shape[1])])) }
                }
            }
            guard chosen == greedy.tokens else {
                throw LightCapError.invalidArgument(reason: "the timed loop decoded \(chosen), Decoder.greedy \(greedy.tokens)")
            }
            parts["total"] = (Clock.threadCPUMs() - start)
            for (k, v) in parts { inLoop[k, default: []].append(v) }
        }
        for (k, v) in inLoop { timings["  in loop: " + k] = v.sorted()[v.count / 2] }

        return Report(timings: timings, greedyIds: greedy.tokens, beamIds: beam.tokens,
                      greedyIdsInt8Fusion: greedyInt8.tokens, beamIdsInt8Fusion: beamInt8.tokens)
    }
}
