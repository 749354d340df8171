// The per-row INT8 quantisation shared by the packed decoder weights (L = 63 or 127), the decoder's
// input (L = 127) and the weight-only INT8 layers (L = 127), against its definition computed here
// element by element (scale = max|x| / L, q = round(x / scale) clamped to +-L), on random rows,
// a zero row, and rows of odd widths.
import XCTest
@testable import LightCapCore
import LightCapTestSupport

final class RowQuantizationTests: XCTestCase {
    func testMatchesDefinition() {
        var random = SeededRandom(seed: 41)
        for levels in [127, 63] {
        for (rows, width) in [(1, 1), (3, 7), (5, 312), (2, 33), (2, 40)] {
            var x = (0..<(rows * width)).map { _ in random.uniform(3) }
            for k in 0..<width { x[k] = 0 }  // row 0 is all zeros: scale 1, every level 0
            if width == 40 {
                // Row 1 has largest magnitude L, so its scale is 1 and x / scale is x itself:
                // exact halves (rounded away from zero), the float just below a half, and values
                // at and just past the clamp.
                let edges: [Float] = [Float(levels), -Float(levels), 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, Float(0.5).nextDown, -Float(0.5).nextDown,
                                      Float(1.5).nextUp, -Float(1.5).nextUp, Float(levels) - 0.5, -Float(levels) + 0.5, 0, -0.0]
                for (k, e) in edges.enumerated() { x[width + k] = e; x[2 * width - 16 + k] = e }  // the 16-lane loop and the tail
            }
            var q = [Int8](repeating: 99, count: x.count)
            let result = x.withUnsafeBufferPointer { p in q.withUnsafeMutableBufferPointer { RowQuantization(p, width: width, levels: levels, into: $0) } }
            for r in 0..<rows {
                let row = Array(x[(r * width)..<((r + 1) * width)])
                let top = row.map(abs).max()!
                let scale: Float = top > 0 ? top / Float(levels) : 1
                XCTAssertEqual(result.scales[r], scale, "\(rows)x\(width) row \(r) scale")
                var norm = 0.0, error = 0.0, quantized = 0.0
                for k in 0..<width {
                    let level = Int8(max(-Float(levels), min(Float(levels), (row[k] / scale).rounded())))
                    XCTAssertEqual(q[r * width + k], level, "\(rows)x\(width) row \(r) level \(k)")
                    let back = Double(level) * Double(scale)
                    norm += Double(row[k] * row[k])
                    error += (Double(row[k]) - back) * (Double(row[k]) - back)
                    quantized += back * back
                }
                if top > 0 { XCTAssertEqual(q[(r * width)..<((r + 1) * width)].map { abs(Int($0)) }.max(), levels) }
                XCTAssertEqual(result.norms[r], Float(norm.squareRoot()), accuracy: 1e-5 * Float(norm.squareRoot()) + 1e-12)
                XCTAssertEqual(result.errorNorms[r], Float(error.squareRoot()), accuracy: 1e-6)
                XCTAssertEqual(result.quantizedNorms[r], Float(quantized.squareRoot()), accuracy: 1e-5 * Float(quantized.squareRoot()) + 1e-12)
                // The error is at most half a step per element.
                XCTAssertLessThanOrEqual(Double(result.errorNorms[r]), 0.5 * Double(scale) * Double(width).squareRoot() * (1 + 1e-6))
            }
        }
        }
    }
}
