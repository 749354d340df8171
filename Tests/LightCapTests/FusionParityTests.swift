// Parity of the concept extractor, modulator, fusion model, heads and decoding with the PyTorch
// reference, on the fixtures written by `python -m lightcap_train.tools.fixtures` (docs/FORMAT.md,
// "Fixtures"): LIGHTCAP_FIXTURES/<size>/{model/, fixtures.safetensors, fixtures.json}, for the
// sizes tiny and base and the ablation variants tiny-no-concepts (no concept extractor, no
// modulator) and tiny-no-modulator. Starts from the fixture grid (the backbone has its own
// parity tests in LightCapModelTests).
import Foundation
import XCTest
import LightCapCore
@testable import LightCapModel
@testable import LightCap
import LightCapTestSupport

/// The fixture set of one size, or nil (skip) when LIGHTCAP_FIXTURES is unset.
struct FixtureSet {
    let folder: URL
    let file: SafetensorsFile
    let cases: [String]
    let json: [String: Any]
    let captioner: Captioner

    static func load(size: String) throws -> FixtureSet? {
        guard let root = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"] else { return nil }
        let folder = URL(fileURLWithPath: root).appendingPathComponent(size)
        for name in ["model/config.json", "fixtures.safetensors", "fixtures.json"] {
            let path = folder.appendingPathComponent(name).path
            guard FileManager.default.fileExists(atPath: path) else {
                XCTFail("LIGHTCAP_FIXTURES is set but \(path) is missing (run python -m lightcap_train.tools.fixtures)")
                return nil
            }
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("fixtures.json"))) as! [String: Any]
        let cases = json["cases"] as? [String] ?? []
        XCTAssertFalse(cases.isEmpty, "\(size): fixtures.json lists no cases")
        return FixtureSet(folder: folder, file: try SafetensorsFile(url: folder.appendingPathComponent("fixtures.safetensors")),
                          cases: cases, json: json,
                          captioner: try Captioner(modelDirectory: folder.appendingPathComponent("model")))
    }

    func tensor(_ c: String, _ name: String) throws -> Tensor { try file.tensor(named: "\(c).\(name)") }
    func ints(_ c: String, _ name: String) throws -> [Int] { try file.int64s(named: "\(c).\(name)") }
    func has(_ c: String, _ name: String) -> Bool { file.entries["\(c).\(name)"] != nil }

    /// Beam width of the fixtures' beam search (fixtures.json "beam_size", else the config's).
    var beamSize: Int { json["beam_size"] as? Int ?? captioner.configuration.decoding.beamSize }
    /// Most tokens of the fixtures' decoding (fixtures.json "max_length", else the config's).
    var maxLength: Int { json["max_length"] as? Int ?? captioner.configuration.decoding.maxLength }
}

/// max |a - b| <= tolerance * max(1, max |expected|).
func assertClose(_ actual: Tensor, _ expected: Tensor, relative tolerance: Float = 1e-4, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): \(actual.shape) vs \(expected.shape)", file: file, line: line)
    guard actual.count == expected.count else { return }
    let scale = max(1, expected.maxAbs)
    let diff = actual.maxAbsDifference(expected)
    XCTAssertLessThanOrEqual(diff, tolerance * scale, "\(what): max difference \(diff), scale \(scale)", file: file, line: line)
}

final class FusionParityTests: XCTestCase {
    func runParity(size: String) throws {
        guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let cap = fx.captioner
        let session = try cap.makeSession()
        for c in fx.cases {
            let grid = try fx.tensor(c, "grid")
            let features = try cap.imageFeatures(grid: grid)
            // Concepts (the reference writes none without a concept extractor).
            XCTAssertEqual(cap.conceptExtractor != nil, fx.has(c, "concept_ids"), "\(size) \(c) concept extractor present")
            if let extractor = cap.conceptExtractor, fx.has(c, "concept_ids") {
                let regions = extractor.regions(grid)
                assertClose(regions, try fx.tensor(c, "regions"), "\(size) \(c) regions")
                let embeddings = extractor.regionEmbeddings(regions)
                assertClose(embeddings, try fx.tensor(c, "region_embeddings"), "\(size) \(c) region embeddings")
                XCTAssertEqual(features.concepts.ids, try fx.ints(c, "concept_ids"), "\(size) \(c) concept ids")
                assertClose(Tensor(shape: [features.concepts.scores.count], scalars: features.concepts.scores),
                            try fx.tensor(c, "concept_scores"), "\(size) \(c) concept scores")
            } else {
                XCTAssertEqual(features.concepts, ConceptSelection(ids: [], scores: []), "\(size) \(c) no concepts")
            }
            // Modulator (absent from the reference's tensors when disabled) and visual tokens.
            XCTAssertEqual(features.modulation != nil, fx.has(c, "modulation"), "\(size) \(c) modulator present")
            if fx.has(c, "modulation"), let m = features.modulation {
                assertClose(Tensor(shape: [m.count], scalars: m), try fx.tensor(c, "modulation"), "\(size) \(c) modulation")
            }
            assertClose(features.modulated, try fx.tensor(c, "modulated"), "\(size) \(c) modulated")
            assertClose(features.visualTokens, try fx.tensor(c, "visual_tokens"), "\(size) \(c) visual tokens")

            // Layout and mask of the fixture caption.
            let tokenIDs = try fx.ints(c, "token_ids")
            let a = cap.configuration.decoding.captionSegmentLength
            var segment = Array(tokenIDs.prefix(a))
            while segment.last == cap.special.pad { segment.removeLast() }
            let input = try cap.fusionInput(captionSegment: segment, features: features)
            XCTAssertEqual(input.tokenIDs, tokenIDs, "\(size) \(c) token ids")
            XCTAssertEqual(input.typeIDs, try fx.ints(c, "token_type_ids"), "\(size) \(c) token types")
            XCTAssertEqual(input.positionIDs, try fx.ints(c, "position_ids"), "\(size) \(c) positions")
            XCTAssertEqual(input.mask.scalars, try fx.tensor(c, "attention_mask").scalars, "\(size) \(c) attention mask")

            // Hidden states and logits.
            let (hidden, headLogits, logits) = try cap.forward(input, features: features)
            for (l, h) in hidden.enumerated() {
                assertClose(h, try fx.tensor(c, "hidden.\(l)"), "\(size) \(c) hidden.\(l)")
            }
            assertClose(headLogits, try fx.tensor(c, "head_logits"), "\(size) \(c) head logits")
            assertClose(logits, try fx.tensor(c, "logits"), "\(size) \(c) ensemble logits")

            // Decoding: cached and uncached, greedy and beam, equal to the reference.
            for useCache in [true, false] {
                for f32Vocabulary in [true, false] {  // cached greedy: F32 or INT8 vocabulary product
                    let greedy = try session.decode(features: features, options: .init(beamSize: 1, maxLength: fx.maxLength, useCache: useCache),
                                                f32Vocabulary: f32Vocabulary)
                    XCTAssertEqual(greedy.tokens, try fx.ints(c, "greedy_ids"), "\(size) \(c) greedy ids (cache \(useCache), F32 \(f32Vocabulary))")
                    XCTAssertEqual(greedy.score, Double(try fx.tensor(c, "greedy_score")[flat: 0]), accuracy: 1e-4,
                                   "\(size) \(c) greedy score (cache \(useCache), F32 \(f32Vocabulary))")
                }
                let beam = try session.decode(features: features, options: .init(beamSize: fx.beamSize, maxLength: fx.maxLength, useCache: useCache))
                XCTAssertEqual(beam.tokens, try fx.ints(c, "beam_ids"), "\(size) \(c) beam ids (cache \(useCache))")
                XCTAssertEqual(beam.score, Double(try fx.tensor(c, "beam_score")[flat: 0]), accuracy: 1e-4,
                               "\(size) \(c) beam score (cache \(useCache))")
            }
        }
    }

    /// Greedy decoding of every fixture case in one batch (cached with the F32 and the INT8
    /// vocabulary product, and uncached) gives each case the reference's ids and score, as
    /// decoding it alone does; the batch holds the cases twice over, in two orders.
    func runBatchParity(size: String) throws {
        guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let cap = fx.captioner
        let session = try cap.makeSession()
        let cases = fx.cases + fx.cases.reversed()
        let features = try cases.map { try cap.imageFeatures(grid: try fx.tensor($0, "grid")) }
        for (useCache, f32Vocabulary) in [(true, true), (true, false), (false, true)] {
            let options = DecodingOptions(beamSize: 1, maxLength: fx.maxLength, useCache: useCache)
            let batch = try session.decode(features: features, options: options, f32Vocabulary: f32Vocabulary)
            XCTAssertEqual(batch.count, cases.count)
            for (c, hypothesis) in zip(cases, batch) {
                let what = "\(size) \(c) batched greedy (cache \(useCache), F32 \(f32Vocabulary))"
                XCTAssertEqual(hypothesis.tokens, try fx.ints(c, "greedy_ids"), what)
                XCTAssertEqual(hypothesis.score, Double(try fx.tensor(c, "greedy_score")[flat: 0]), accuracy: 1e-4, what)
            }
        }
    }

    func testTinyBatchParity() throws { try runBatchParity(size: "tiny") }
    func testBaseBatchParity() throws { try runBatchParity(size: "base") }
    func testTinyNoConceptsBatchParity() throws { try runBatchParity(size: "tiny-no-concepts") }

    /// A batch of image files (the committed model and examples): each caption equals the file
    /// captioned alone (greedy and beam), a bad file fails in its place and the others go on.
    func testBatchOfFilesKeepsOrderAndErrors() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let captioner = try Captioner(modelDirectory: root.appendingPathComponent("models/default"))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-batch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let broken = folder.appendingPathComponent("broken.png")
        try Data("not an image".utf8).write(to: broken)
        let missing = folder.appendingPathComponent("missing.png")
        let examples = (1...3).map { root.appendingPathComponent("examples/scene\($0).png") }
        let inputs = [examples[0], broken, examples[1], missing, examples[2], examples[0]]
        let session = try captioner.makeSession()
        for beam in [1, 3] {
            let options = DecodingOptions(beamSize: beam, maxLength: 20)
            let results = try session.captions(imagesAt: inputs, options: options)
            XCTAssertEqual(results.count, inputs.count)
            for (url, result) in zip(inputs, results) {
                switch (try? session.caption(imageAt: url, options: options), result) {
                case (let alone?, .success(let batched)):
                    XCTAssertEqual(batched.tokenIds, alone.tokenIds, "beam \(beam) \(url.lastPathComponent)")
                    XCTAssertEqual(batched.score, alone.score, accuracy: 1e-5, "beam \(beam) \(url.lastPathComponent)")
                case (nil, .failure(let error)):
                    XCTAssertTrue(url == broken || "\(error)".contains(url.path), "\(error)")
                default:
                    XCTFail("beam \(beam) \(url.lastPathComponent): alone and batched disagree on success")
                }
            }
        }
        XCTAssertThrowsError(try session.captions(imagesAt: examples, options: DecodingOptions(beamSize: 0)))
    }

    /// The whole pipeline from the fixture pixels (backbone included) gives the reference captions.
    func runPipeline(size: String, convolutions: ConvolutionPolicy = .exact) throws {
        guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let captioner = convolutions == .exact ? fx.captioner
            : try Captioner(modelDirectory: fx.folder.appendingPathComponent("model"), convolutions: convolutions)
        let session = try captioner.makeSession()
        for c in fx.cases {
            let pixels = try fx.tensor(c, "input").scalars
            let greedy = try session.caption(pixels: pixels, options: .init(beamSize: 1, maxLength: fx.maxLength))
            XCTAssertEqual(greedy.tokenIds, try fx.ints(c, "greedy_ids"), "\(size) \(c) greedy from pixels")
            let conceptIDs = fx.has(c, "concept_ids") ? try fx.ints(c, "concept_ids") : []
            XCTAssertEqual(greedy.concepts.map(\.name), conceptIDs.map { captioner.conceptNames[$0] })
            for stage in ["backbone", "concepts", "fusion"] { XCTAssertNotNil(greedy.timings[stage], stage) }
            let beam = try session.caption(pixels: pixels, options: .init(beamSize: fx.beamSize, maxLength: fx.maxLength))
            XCTAssertEqual(beam.tokenIds, try fx.ints(c, "beam_ids"), "\(size) \(c) beam from pixels")
            if let captions = fx.json["captions"] as? [String: [String: String]], let expected = captions[c] {
                XCTAssertEqual(greedy.text, expected["greedy"], "\(size) \(c) greedy text")
                XCTAssertEqual(beam.text, expected["beam"], "\(size) \(c) beam text")
            }
        }
    }

    func testTinyPipeline() throws { try runPipeline(size: "tiny") }
    func testBasePipeline() throws { try runPipeline(size: "base") }
    /// LightCap's Winograd backbone gives the same captions as the reference (docs/VISUAL.md).
    func testTinyPipelineWithLightCapWinograd() throws { try runPipeline(size: "tiny", convolutions: .lightcapWinograd) }
    func testBasePipelineWithLightCapWinograd() throws { try runPipeline(size: "base", convolutions: .lightcapWinograd) }
    func testTinyNoConceptsPipeline() throws { try runPipeline(size: "tiny-no-concepts") }
    func testTinyNoModulatorPipeline() throws { try runPipeline(size: "tiny-no-modulator") }
    func testTinyVisualPositionsPipeline() throws { try runPipeline(size: "tiny-visual-positions") }

    /// The INT8 vocabulary product: exact argmax and exact logits at it, every other logit within
    /// its stated error bound (QuantizedDecoder), on random states and on the fixture's final
    /// hidden rows. The log-sum-exp, 1-Lipschitz in the largest change of a logit, moves by at
    /// most the worst logit error. Quality bar: that error under 0.1 of the row's largest logit.
    func testQuantizedDecoderHasExactArgmax() throws {
        for size in ["tiny", "base"] {
            guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
            let heads = fx.captioner.heads, d = fx.captioner.configuration.fusion.hiddenSize
            let decoder = heads.quantizedDecoder
            var generator = SeededRandom(seed: 7)
            var inputs = [Tensor(shape: [4, d], generator: { _ in Float(generator.nextGaussian()) })]
            let features = try fx.captioner.imageFeatures(grid: try fx.tensor(fx.cases[0], "grid"))
            let input = try fx.captioner.fusionInput(captionSegment: [fx.captioner.special.cls, fx.captioner.special.mask], features: features)
            inputs.append(try fx.captioner.forward(input, features: features).hidden.last!.rows(0..<4))
            for x in inputs {
                let exact = heads.logits(x)
                let fast = heads.argmaxExactLogits(x)
                let states = heads.transformed(x)
                var levels = [Int8](repeating: 0, count: states.count)
                let quantized = states.withUnsafeBufferPointer { p in
                    levels.withUnsafeMutableBufferPointer { RowQuantization(p, width: d, levels: QuantizedDecoder.inputLevels, into: $0) }
                }
                for r in 0..<x.shape[0] {
                    let row = exact.rows(r..<(r + 1)).scalars
                    let best = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
                    let fastBest = fast[r].indices.max { fast[r][$0] < fast[r][$1] || (fast[r][$0] == fast[r][$1] && $0 > $1) }!
                    XCTAssertEqual(fastBest, best, "\(size) row \(r): argmax")
                    XCTAssertEqual(fast[r][best], row[best], accuracy: 1e-5 * max(1, abs(row[best])), "\(size) row \(r): logit at argmax")
                    let outside = row.indices.filter { j in
                        let bound = quantized.errorNorms[r] * decoder.rowNorms[j] + quantized.quantizedNorms[r] * decoder.errorNorms[j]
                        return abs(fast[r][j] - row[j]) > bound + 1e-5 * (1 + abs(row[j]))
                    }
                    XCTAssertEqual(outside.count, 0, "\(size) row \(r): logits outside their INT8 error bound")
                    let worst = zip(fast[r], row).map { abs($0 - $1) }.max()!
                    XCTAssertLessThan(worst, 0.1 * max(1, row.map(abs).max()!), "\(size) row \(r): INT8 error")
                    let lse = fast[r].withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }
                    let lseExact = row.withUnsafeBufferPointer { LogSoftmax.logSumExpReference($0) }
                    XCTAssertEqual(lse, lseExact, accuracy: Double(worst) + 1e-5 * max(1, abs(lseExact)), "\(size) row \(r): log-sum-exp")
                }
            }
        }
    }

    /// At base size, the packed F32 vocabulary product against its sgemm twin, and the exact
    /// scores after cached greedy decoding (`CachedSession.greedyLogProbabilities`: packed product,
    /// SIMD log-sum-exp) against the plain twins (sgemm, libm exp in Double), on 20 rows: the
    /// fixture's final hidden rows and random states. Tolerances: logits 1e-5 x the row scale
    /// (Float rounding of 312-term dot products), log-probabilities 1e-5 (as cached vs uncached).
    func testExactScoresMatchPlainTwins() throws {
        guard let fx = try FixtureSet.load(size: "base") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let cap = fx.captioner, heads = cap.heads, d = cap.configuration.fusion.hiddenSize
        let features = try cap.imageFeatures(grid: try fx.tensor(fx.cases[0], "grid"))
        let input = try cap.fusionInput(captionSegment: [cap.special.cls, cap.special.mask], features: features)
        let last = try cap.forward(input, features: features).hidden.last!
        var generator = SeededRandom(seed: 13)
        let k = min(8, last.shape[0])
        let rows = last.rows(0..<k).scalars + (0..<((20 - k) * d)).map { _ in Float(generator.nextGaussian()) }
        let states = heads.transformed(Tensor(shape: [20, d], scalars: rows))
        let fast = heads.vocabularyLogits(transformed: states), plain = heads.vocabularyLogitsPlain(transformed: states)
        assertClose(fast, plain, relative: 1e-5, "packed vs sgemm vocabulary product")

        let v = heads.vocabularySize
        let plainRows = (0..<20).map { Array(plain.scalars[($0 * v)..<(($0 + 1) * v)]) }
        let tokens = plainRows.map { row in row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }! }
        let session = CachedSession(fusion: cap.fusion, heads: heads, special: cap.special,
                                    captionSegmentLength: cap.configuration.decoding.captionSegmentLength)
        try session.start([ImageContext(conceptPieces: cap.conceptSegment(features.concepts), visualTokens: features.visualTokens)],
                          exactTop: 1)
        session.transformedStates = [(0..<20).map { states.rows($0..<($0 + 1)) }]
        let exact = session.greedyLogProbabilities(of: tokens, rows: [], image: 0)
        for (r, row) in plainRows.enumerated() {
            let reference = Double(row[tokens[r]]) - row.withUnsafeBufferPointer { LogSoftmax.logSumExpReference($0) }
            XCTAssertEqual(Double(exact[r]), reference, accuracy: 1e-5, "row \(r): log-probability of token \(tokens[r])")
        }
    }

    /// The log-sum-exp (SIMD, FastMath exp) against libm's exp in Double.
    func testLogSumExpMatchesReference() {
        var generator = SeededRandom(seed: 3)
        for scale in [0.01, 1.0, 10.0, 100.0] {
            let row = (0..<5000).map { _ in Float(generator.nextGaussian() * scale) }
            let fast = row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }
            let reference = row.withUnsafeBufferPointer { LogSoftmax.logSumExpReference($0) }
            XCTAssertEqual(fast, reference, accuracy: 1e-6 * max(1, abs(reference)), "scale \(scale)")
        }
    }

    func testTinyParity() throws { try runParity(size: "tiny") }
    func testBaseParity() throws { try runParity(size: "base") }
    /// The "without the concept extractor" ablation: no concept segment (T = A), no modulation.
    func testTinyNoConceptsParity() throws { try runParity(size: "tiny-no-concepts") }
    /// The "without the modulator" ablation: concept segment kept, the grid unmodulated.
    func testTinyNoModulatorParity() throws { try runParity(size: "tiny-no-modulator") }
    /// A learned position embedding per grid cell on the visual tokens (fusion.visual_position_embeddings).
    func testTinyVisualPositionsParity() throws { try runParity(size: "tiny-visual-positions") }

    /// The cached decoder equals the uncached one on every fixture case and on other beam widths
    /// and lengths than the fixtures', including the caption result (text, tokens, concepts);
    /// one session serves every call, and a fresh session gives the same caption.
    func testCachedEqualsUncached() throws {
        for size in ["tiny", "tiny-no-concepts", "tiny-no-modulator", "tiny-visual-positions"] {
            try checkCachedEqualsUncached(size: size)
        }
    }

    func checkCachedEqualsUncached(size: String) throws {
        guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let concepts = fx.captioner.conceptExtractor == nil
            ? 0 : min(fx.captioner.configuration.concepts.topK, fx.captioner.conceptNames.count)
        let session = try fx.captioner.makeSession()
        for c in fx.cases {
            let grid = try fx.tensor(c, "grid")
            for beam in [1, 2, 3, 5] {
                for maxLength in [1, 3, 20] {
                    let cached = try session.caption(grid: grid, options: .init(beamSize: beam, maxLength: maxLength, useCache: true))
                    let plain = try session.caption(grid: grid, options: .init(beamSize: beam, maxLength: maxLength, useCache: false))
                    let fresh = try fx.captioner.makeSession().caption(grid: grid, options: .init(beamSize: beam, maxLength: maxLength))
                    XCTAssertEqual(fresh.tokenIds, cached.tokenIds, "\(size) \(c) beam \(beam) max \(maxLength): a reused session")
                    XCTAssertEqual(cached.tokenIds, plain.tokenIds, "\(size) \(c) beam \(beam) max \(maxLength)")
                    XCTAssertEqual(cached.score, plain.score, accuracy: 1e-5, "\(size) \(c) beam \(beam) max \(maxLength)")
                    XCTAssertLessThanOrEqual(cached.tokenIds.count, maxLength)
                    XCTAssertEqual(cached.tokens, cached.tokenIds.map { fx.captioner.tokenizer.vocabulary[$0] })
                    XCTAssertEqual(cached.text, fx.captioner.tokenizer.decode(cached.tokenIds))
                    XCTAssertEqual(cached.concepts.count, concepts, "\(size) \(c) concepts")
                    XCTAssertNotNil(cached.timings["fusion"])
                }
            }
        }
    }

    /// One shared captioner, several threads at once: every call gets the sequential result.
    func testConcurrentCallsShareOneCaptioner() throws {
        guard let fx = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let inputs = try fx.cases.map { try fx.tensor($0, "input").scalars }
        let expected = try inputs.map { try fx.captioner.makeSession().caption(pixels: $0, options: .init(beamSize: 2)).tokenIds }
        let results = ResultBox(count: 8)
        let captioner = fx.captioner
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            results.set(i, try? captioner.makeSession().caption(pixels: inputs[i % inputs.count], options: .init(beamSize: 2)).tokenIds)
        }
        for i in 0..<8 { XCTAssertEqual(results.get(i), expected[i % inputs.count], "call \(i)") }
    }

    func testBadInputsThrow() throws {
        guard let fx = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let cap = try fx.captioner.makeSession()
        XCTAssertThrowsError(try cap.caption(grid: Tensor(zeros: [3, 5])))
        let grid = try fx.tensor(fx.cases[0], "grid")
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(beamSize: 0)))
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(maxLength: 0)))
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(maxLength: fx.captioner.configuration.decoding.captionSegmentLength - 1))) { error in
            XCTAssertTrue("\(error)".contains("max length"), "\(error)")
        }
        XCTAssertThrowsError(try cap.caption(pixels: [0, 1, 2])) { error in
            XCTAssertTrue("\(error)".contains("pixels"), "\(error)")
        }
        XCTAssertThrowsError(try cap.caption(imageData: Data("not an image".utf8)))
        XCTAssertThrowsError(try cap.caption(imageAt: URL(fileURLWithPath: "/nonexistent/image.jpg"))) { error in
            XCTAssertEqual(error as? LightCapError, .fileNotFound(path: "/nonexistent/image.jpg"))
        }
        XCTAssertThrowsError(try Captioner(modelDirectory: URL(fileURLWithPath: "/nonexistent/model")))
        XCTAssertThrowsError(try Captioner(modelDirectory: fx.folder.appendingPathComponent("model"), threads: 0))
    }
}

/// Thread-safe slots for results of concurrent calls.
final class ResultBox: @unchecked Sendable {
    private var values: [[Int]?]
    private let lock = NSLock()
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: [Int]?) { lock.lock(); values[i] = v; lock.unlock() }
    func get(_ i: Int) -> [Int]? { lock.lock(); defer { lock.unlock() }; return values[i] }
}
