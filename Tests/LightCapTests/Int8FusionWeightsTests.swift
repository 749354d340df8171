// The INT8 fusion weights (`--fusion-weights int8`, FusionModel's step products as Int8Linear):
// each decoding step against its plain twin (the same step on the F32 layers over the rounded
// weights), and the captions against the reference's on the fixtures. The quality budget on
// whole test sets is scripts/quality_budget.py's (docs/DECODING.md).
import XCTest
import LightCapCore
@testable import LightCapModel
@testable import LightCap
import LightCapTestSupport

final class Int8FusionWeightsTests: XCTestCase {
    func int8Captioner(_ fx: FixtureSet) throws -> Captioner {
        try Captioner(modelDirectory: fx.folder.appendingPathComponent("model"), fusionWeights: .int8)
    }

    /// Through six steps (the fixture caption's tokens), each step's [MASK] state with INT8 weights equals
    /// the twin's within F32 rounding (1e-4 of the scale), and differs from the F32 model's (the
    /// INT8 layers are the ones running).
    func testStepsMatchDequantizedTwin() throws {
        for size in ["tiny", "base"] {
            guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
            let int8 = try int8Captioner(fx)
            XCTAssertEqual(int8.fusion.stepWeights, .int8)
            // Decoding reads only the INT8 vocabulary: no packed F32 copy.
            XCTAssertFalse(int8.heads.isF32DecoderPacked, size)
            XCTAssertTrue(fx.captioner.heads.isF32DecoderPacked, size)
            let twin = int8.fusion.dequantizedStepTwin(), exact = fx.captioner.fusion
            let (cls, mask) = (int8.special.cls, int8.special.mask)
            let a = int8.configuration.decoding.captionSegmentLength
            for c in fx.cases {
                let features = try int8.imageFeatures(grid: try fx.tensor(c, "grid"))
                let concepts = int8.conceptSegment(features.concepts).map { $0 + [int8.special.sep] } ?? []
                let image = try exact.imageCache(conceptTokens: concepts, visualTokens: features.visualTokens, captionSegmentLength: a)
                var caches = (fast: CaptionCache(image: image), twin: CaptionCache(image: image), exact: CaptionCache(image: image))
                var token = cls
                var largestChange: Float = 0
                for (t, next) in try fx.ints(c, "token_ids").dropFirst().prefix(6).enumerated() {
                    let fast = try int8.fusion.step(caches: [caches.fast], tokens: [token], maskID: mask)
                    let plain = try twin.step(caches: [caches.twin], tokens: [token], maskID: mask)
                    let f32 = try exact.step(caches: [caches.exact], tokens: [token], maskID: mask)
                    assertClose(fast.hidden, plain.hidden, relative: 1e-4, "\(size) \(c) step \(t) INT8 vs its twin")
                    largestChange = max(largestChange, fast.hidden.maxAbsDifference(f32.hidden))
                    caches = (fast.caches[0], plain.caches[0], f32.caches[0])
                    token = next
                }
                XCTAssertGreaterThan(largestChange, 0, "\(size) \(c): the INT8 steps equal the F32 ones bit for bit")
            }
        }
    }

    /// From the fixture pixels, INT8 fusion weights give the reference's greedy tokens (and its
    /// score within 1e-2) on every fixture case whose smallest margin between the two best
    /// logits of a step (fixtures.json "min_margin") is at least 2e-3: the rounding moves the
    /// logits by less than that. Cases with smaller margins (random weights give some of 2e-4)
    /// may flip a token; scripts/quality_budget.py measures how often on whole test sets.
    func testCaptionsEqualReferenceWhereMarginsAllow() throws {
        var checked = 0
        for size in ["tiny", "base", "tiny-no-concepts"] {
            guard let fx = try FixtureSet.load(size: size) else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
            let session = try int8Captioner(fx).makeSession()
            let margins = fx.json["min_margin"] as? [String: Double] ?? [:]
            for c in fx.cases where margins[c, default: 0] >= 2e-3 {
                let pixels = try fx.tensor(c, "input").scalars
                let greedy = try session.caption(pixels: pixels, options: .init(beamSize: 1, maxLength: fx.maxLength))
                XCTAssertEqual(greedy.tokenIds, try fx.ints(c, "greedy_ids"), "\(size) \(c) greedy")
                XCTAssertEqual(greedy.score, Double(try fx.tensor(c, "greedy_score")[flat: 0]), accuracy: 1e-2, "\(size) \(c) greedy score")
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 3, "fixture cases with margins of 2e-3 or more")
    }
}
