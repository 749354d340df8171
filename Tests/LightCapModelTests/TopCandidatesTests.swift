// TopCandidates against plain twins: the streaming selection against a full stable sort (the
// reference's torch.sort(descending, stable)), with many ties; the block-skipping row offer
// against offering every candidate one by one, on rows with ties, infinities and NaN; the INT8
// decoder's `largest` against the same sort.
import XCTest
@testable import LightCapModel
import LightCapTestSupport

final class TopCandidatesTests: XCTestCase {
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
            XCTAssertEqual(QuantizedDecoder.largest(k, of: scores), Array(reference), "trial \(trial)")
        }
    }

    /// Several rows in a row (beam search's hypotheses), each offered whole with its base and
    /// shift, give the same items, bit for bit, as every candidate offered alone.
    func testRowOfferEqualsOneByOne() {
        var generator = SeededRandom(seed: 23)
        func uniform() -> Float { Float(generator.next() % 1_000_000) / 1_000_000 }
        var skippedSome = false
        for trial in 0..<300 {
            let rows = 1 + Int(generator.next() % 5), n = 1 + Int(generator.next() % 700)
            let k = 1 + Int(generator.next() % 12)
            let special: [Float] = [.nan, .infinity, -.infinity, 0, -0.0]
            let kind = trial % 4  // 0: continuous, 1: ties, 2: a rising row (few skips), 3: with specials
            var plain = TopCandidates(count: k), fast = TopCandidates(count: k)
            for r in 0..<rows {
                var row: [Float] = (0..<n).map { j in
                    switch kind {
                    case 0: return uniform() * 20 - 10
                    case 1: return Float(Int(generator.next() % 5)) * 0.25
                    case 2: return Float(j) * 0.01 + uniform() * 0.1
                    default: return uniform() * 4 - 2
                    }
                }
                if kind == 3 {
                    for _ in 0..<(1 + Int(generator.next() % 6)) { row[Int(generator.next() % UInt64(n))] = special[Int(generator.next() % 5)] }
                }
                let base = kind == 3 && r == 1 ? -Float.infinity : -uniform() * 3
                let shift = Float(kind) + uniform()
                for (j, x) in row.enumerated() { plain.offer((base + (x - shift), r * n + j)) }
                row.withUnsafeBufferPointer { fast.offer(row: $0, base: base, shift: shift, flatOffset: r * n) }
            }
            XCTAssertEqual(fast.items.map(\.flat), plain.items.map(\.flat), "trial \(trial)")
            XCTAssertEqual(fast.items.map(\.score.bitPattern), plain.items.map(\.score.bitPattern), "trial \(trial)")
            skippedSome = skippedSome || (rows * n >= 64 && kind == 0)
        }
        XCTAssertTrue(skippedSome)
    }
}
