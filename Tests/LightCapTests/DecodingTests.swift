// Decoding helpers against plain twins: the streaming top-2B selection against a full stable
// sort (the reference's torch.sort(descending, stable)), with many ties.
import XCTest
@testable import LightCap
import LightCapTestSupport

final class DecodingTests: XCTestCase {
    func testTopCandidatesEqualsStableSort() {
        var generator = SeededRandom(seed: 11)
        for trial in 0..<50 {
            let n = 1 + Int(generator.next() % 400)
            // Few distinct values: many ties, broken by the lower index.
            let scores = (0..<n).map { _ in Float(Int(generator.next() % 7)) * 0.5 - 1 }
            let k = 1 + Int(generator.next() % 12)
            var top = TopCandidates(count: k)
            for (i, s) in scores.enumerated() { top.offer((s, i)) }
            let reference = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }.prefix(k)
            XCTAssertEqual(top.items.map(\.flat), Array(reference), "trial \(trial)")
        }
    }

    func testDecodingOptionsDefaults() {
        let o = DecodingOptions()
        XCTAssertEqual(o.beamSize, 1)
        XCTAssertEqual(o.maxLength, 20)
        XCTAssertTrue(o.useCache)
    }
}
