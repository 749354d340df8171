// Parity of the concept extractor, modulator, fusion model, heads and decoding with the PyTorch
// reference, on the fixtures written by `python -m lightcap_train.fixtures` (docs/FORMAT.md,
// "Fixtures"): LIGHTCAP_FIXTURES/<size>/{model/, fixtures.safetensors, fixtures.json}.
// Starts from the fixture grid (the backbone has its own parity tests in LightCapModelTests).
import Foundation
import XCTest
import LightCapCore
import LightCapModel
@testable import LightCap

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
                XCTFail("LIGHTCAP_FIXTURES is set but \(path) is missing (run python -m lightcap_train.fixtures)")
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
        for c in fx.cases {
            let grid = try fx.tensor(c, "grid")
            // Concepts.
            let regions = cap.conceptExtractor.regions(grid)
            assertClose(regions, try fx.tensor(c, "regions"), "\(size) \(c) regions")
            let embeddings = cap.conceptExtractor.regionEmbeddings(regions)
            assertClose(embeddings, try fx.tensor(c, "region_embeddings"), "\(size) \(c) region embeddings")
            let features = try cap.imageFeatures(grid: grid)
            XCTAssertEqual(features.concepts.ids, try fx.ints(c, "concept_ids"), "\(size) \(c) concept ids")
            assertClose(Tensor(shape: [features.concepts.scores.count], scalars: features.concepts.scores),
                        try fx.tensor(c, "concept_scores"), "\(size) \(c) concept scores")
            // Modulator and visual tokens.
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
                let greedy = try cap.decode(features: features, options: .init(beamSize: 1, maxLength: fx.maxLength, useCache: useCache))
                XCTAssertEqual(greedy.tokens, try fx.ints(c, "greedy_ids"), "\(size) \(c) greedy ids (cache \(useCache))")
                XCTAssertEqual(greedy.score, Double(try fx.tensor(c, "greedy_score")[flat: 0]), accuracy: 1e-4,
                               "\(size) \(c) greedy score (cache \(useCache))")
                let beam = try cap.decode(features: features, options: .init(beamSize: fx.beamSize, maxLength: fx.maxLength, useCache: useCache))
                XCTAssertEqual(beam.tokens, try fx.ints(c, "beam_ids"), "\(size) \(c) beam ids (cache \(useCache))")
                XCTAssertEqual(beam.score, Double(try fx.tensor(c, "beam_score")[flat: 0]), accuracy: 1e-4,
                               "\(size) \(c) beam score (cache \(useCache))")
            }
        }
    }

    func testTinyParity() throws { try runParity(size: "tiny") }
    func testBaseParity() throws { try runParity(size: "base") }

    /// The cached decoder equals the uncached one on every fixture case and on other beam widths
    /// and lengths than the fixtures', including the caption result (text, tokens, concepts).
    func testCachedEqualsUncached() throws {
        guard let fx = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        for c in fx.cases {
            let grid = try fx.tensor(c, "grid")
            for beam in [1, 2, 3, 5] {
                for maxLength in [1, 3, 20] {
                    let cached = try fx.captioner.caption(grid: grid, options: .init(beamSize: beam, maxLength: maxLength, useCache: true))
                    let plain = try fx.captioner.caption(grid: grid, options: .init(beamSize: beam, maxLength: maxLength, useCache: false))
                    XCTAssertEqual(cached.tokenIds, plain.tokenIds, "\(c) beam \(beam) max \(maxLength)")
                    XCTAssertEqual(cached.score, plain.score, accuracy: 1e-5, "\(c) beam \(beam) max \(maxLength)")
                    XCTAssertLessThanOrEqual(cached.tokenIds.count, maxLength)
                    XCTAssertEqual(cached.tokens, cached.tokenIds.map { fx.captioner.tokenizer.vocabulary[$0] })
                    XCTAssertEqual(cached.text, fx.captioner.tokenizer.decode(cached.tokenIds))
                    XCTAssertEqual(cached.concepts.count, min(fx.captioner.configuration.concepts.topK, fx.captioner.conceptNames.count))
                    XCTAssertNotNil(cached.timings["fusion"])
                }
            }
        }
    }

    func testBadInputsThrow() throws {
        guard let fx = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let cap = fx.captioner
        XCTAssertThrowsError(try cap.caption(grid: Tensor(zeros: [3, 5])))
        let grid = try fx.tensor(fx.cases[0], "grid")
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(beamSize: 0)))
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(maxLength: 0)))
        XCTAssertThrowsError(try cap.caption(grid: grid, options: .init(maxLength: cap.configuration.decoding.captionSegmentLength)))
        XCTAssertThrowsError(try Captioner(modelDirectory: URL(fileURLWithPath: "/nonexistent/model")))
        XCTAssertThrowsError(try Captioner(modelDirectory: fx.folder.appendingPathComponent("model"), threads: 0))
    }
}
