// FastMath (polynomial exp, erf, GELU) against its reference twins: libm in Double and
// LightCapReference's `Reference.gelu`, on a dense sweep and on random values.
import XCTest
import LightCapCore
@testable import LightCapModel
import LightCapReference

final class FastMathTests: XCTestCase {
    func testExpMatchesLibm() {
        var x: Float = -87
        while x <= 0 {
            let e = Double(FastMath.expNonPositive(x)), reference = Foundation.exp(Double(x))
            XCTAssertEqual(e, reference, accuracy: 3e-7 * reference, "exp(\(x))")
            x += 0.0137
        }
        XCTAssertEqual(FastMath.expNonPositive(0), 1)
        XCTAssertLessThan(FastMath.expNonPositive(-1000), 2e-38)  // clamped, never NaN or negative
        XCTAssertGreaterThanOrEqual(FastMath.expNonPositive(-1000), 0)
    }

    /// The SIMD16 exp is the scalar one lane by lane, bit for bit (same operations, same order),
    /// on a sweep over [-100, 0] and the edges (-inf, -87, -0, the smallest magnitudes).
    func testSIMDExpEqualsScalar() {
        var values: [Float] = stride(from: -100, through: 0, by: 0.0071).map { Float($0) }
        values += [-.infinity, -1e30, -87.5, -87, -86.99, -1e-30, -Float.leastNonzeroMagnitude, -0.0, 0]
        while values.count % 16 != 0 { values.append(-1) }
        for start in stride(from: 0, to: values.count, by: 16) {
            let lanes = SIMD16<Float>(values[start..<(start + 16)])
            let fast = FastMath.expNonPositive(lanes)
            for l in 0..<16 {
                XCTAssertEqual(fast[l].bitPattern, FastMath.expNonPositive(lanes[l]).bitPattern, "exp(\(lanes[l]))")
            }
        }
    }

    /// The SIMD first argmax against the scalar loop of greedy decoding (lowest index on ties):
    /// odd lengths, many ties, the max in the scalar tail or at 0, -inf entries, all -inf, empty.
    func testFirstIndexOfMaxEqualsScalarLoop() {
        func scalar(_ x: [Float]) -> Int {
            var best = 0
            for j in x.indices where x[j] > x[best] { best = j }
            return best
        }
        var state: UInt64 = 5
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(state >> 33)
        }
        var rows: [[Float]] = [[], [1], [-.infinity, -.infinity], [Float](repeating: -.infinity, count: 40),
                               [Float](repeating: 2, count: 33)]
        for n in [2, 15, 16, 17, 31, 32, 33, 100, 1000, 30522] {
            for distinct in [2, 7, 1000] {
                var row = (0..<n).map { _ in Float(next() % distinct) - 3 }
                if n > 3 { row[next() % n] = -.infinity }
                rows.append(row)
            }
            var tailMax = (0..<n).map { _ in Float(next() % 100) }
            tailMax[n - 1] = 1000
            rows.append(tailMax)
            var headMax = tailMax
            headMax[0] = 2000
            rows.append(headMax)
        }
        for (i, row) in rows.enumerated() {
            XCTAssertEqual(row.withUnsafeBufferPointer { FastMath.firstIndexOfMax($0) }, scalar(row), "row \(i) (\(row.count) values)")
        }
    }

    func testErfAndGeluMatchReference() {
        var values: [Float] = stride(from: -12, through: 12, by: 0.001).map { Float($0) }
        values += [0, -0, 1e-30, -1e-30, 50, -50, 1e4, -1e4]
        for v in values {
            XCTAssertEqual(Double(FastMath.erf(v)), Foundation.erf(Double(v)), accuracy: 6e-7, "erf(\(v))")
        }
        var fast = values
        fast.withUnsafeMutableBufferPointer { FastMath.gelu(inPlace: $0) }
        let reference = Reference.gelu(Tensor(shape: [values.count], scalars: values)).scalars
        for i in values.indices {
            XCTAssertEqual(fast[i], reference[i], accuracy: 4e-7 * max(1, abs(values[i])), "gelu(\(values[i]))")
        }
        // The 16-lane loop against the scalar one, bit for bit (infinities too; a NaN stays a NaN,
        // its sign bit may differ), at every tail length.
        values += [.nan, .infinity, -.infinity, .leastNonzeroMagnitude, -.greatestFiniteMagnitude]
        for count in [values.count, values.count - 1, 17, 15, 1, 0] {
            var lanes = Array(values.suffix(count)), scalar = lanes
            lanes.withUnsafeMutableBufferPointer { FastMath.gelu(inPlace: $0) }
            scalar.withUnsafeMutableBufferPointer { FastMath.geluScalar(inPlace: $0) }
            func bits(_ v: [Float]) -> [UInt32] { v.map { $0.isNaN ? Float.nan.bitPattern : $0.bitPattern } }
            XCTAssertEqual(bits(lanes), bits(scalar), "\(count) values")
        }
    }
}
