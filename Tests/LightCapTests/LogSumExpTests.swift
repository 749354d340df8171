// The vectorised log-sum-exp of decoding (SIMD16, FastMath's exp, Float lanes summed per block
// of 128 in Double) against its plain scalar twin (libm's exp in Double, one Double sum).
import XCTest
@testable import LightCap
import LightCapTestSupport

final class LogSumExpTests: XCTestCase {
    /// Stated tolerance: 1e-6 x max(1, |lse|). The terms' relative error is at most 3e-7 (the
    /// polynomial exp) and the sum's about 1e-7 (at most 8 Float additions per lane, then
    /// Double), so the normaliser is off by well under 1e-6; the row's max itself is exact.
    func assertMatches(_ row: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let fast = row.withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }
        let reference = row.withUnsafeBufferPointer { LogSoftmax.logSumExpReference($0) }
        XCTAssertEqual(fast, reference, accuracy: 1e-6 * max(1, abs(reference)), what, file: file, line: line)
    }

    /// Random rows of odd and block-edge lengths (tails of 1-15 values, partial blocks), spreads
    /// from 1e-3 (all terms near 1) to 1e3 (one term dominates), the base vocabulary's length.
    func testLogSumExpMatchesScalarTwinOnRandomRows() {
        var generator = SeededRandom(seed: 31)
        for n in [1, 2, 15, 16, 17, 31, 127, 128, 129, 143, 255, 257, 1000, 4099, 30522] {
            for scale in [1e-3, 0.1, 1, 10, 100, 1e3] {
                let offset = Float(generator.nextGaussian() * 50)
                let row = (0..<n).map { _ in offset + Float(generator.nextGaussian() * scale) }
                assertMatches(row, "n \(n) scale \(scale)")
            }
        }
    }

    /// Huge and tiny magnitudes, -inf entries (masked tokens), a row of equal values, and the
    /// degenerate rows: all -inf and empty give -inf (as the scalar twin's max).
    func testLogSumExpEdgeValues() {
        var generator = SeededRandom(seed: 32)
        for n in [1, 17, 300, 30522] {
            var huge = (0..<n).map { _ in Float(generator.nextGaussian()) * 1e37 }
            huge[n / 2] = 3e38
            assertMatches(huge, "huge n \(n)")
            assertMatches((0..<n).map { _ in Float(generator.nextGaussian()) * 1e-30 }, "tiny n \(n)")
            assertMatches([Float](repeating: -1e30, count: n), "equal n \(n)")
            var masked = (0..<n).map { _ in Float(generator.nextGaussian() * 3) }
            for i in stride(from: 0, to: n, by: 3) where i != n / 2 { masked[i] = -.infinity }
            assertMatches(masked, "-inf entries n \(n)")
            var spread = (0..<n).map { _ in Float(generator.nextGaussian() * 3) }
            spread[0] = 200  // every other term below e^-87: clamped to ~1.6e-38 instead of 0
            assertMatches(spread, "one dominant term n \(n)")
        }
        XCTAssertEqual([Float](repeating: -.infinity, count: 40).withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }, -Double.infinity)
        XCTAssertEqual([Float]().withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }, -Double.infinity)
        XCTAssertEqual([-Float.infinity].withUnsafeBufferPointer { LogSoftmax.logSumExp($0) }, -Double.infinity)
    }
}
