// Int8Linear (LightCap's weight-only INT8 kernel) against its plain twins: Reference.linear in
// Double over the rounded weights q * s (each output within the F32 rounding bound of a K-term
// sum), and the F32 layer it came from (each weight within half its row's scale). The test
// script runs this again with LIGHTCAP_KERNEL_ISA=avx2 and =generic, so every vector path the
// host has is checked.
import XCTest
@testable import LightCapCore
import CKernels
import LightCapReference
import LightCapTestSupport

final class Int8LinearTests: XCTestCase {
    /// Shapes: one row, the fusion layers' step shapes (2 and 10 rows by 312 -> 936, 312 -> 1200,
    /// 1200 -> 312), outputs not a multiple of the 16-row panel, one input feature, blocks of
    /// 4 rows and their remainders.
    static let shapes = [(1, 1, 1), (2, 312, 936), (10, 312, 1200), (2, 1200, 312), (5, 13, 7), (3, 17, 33),
                         (4, 1, 16), (9, 31, 17), (1, 64, 1)]

    func testMatchesDoubleSumOverRoundedWeights() throws {
        var rng = SeededRandom(seed: 61)
        for (m, k, n) in Self.shapes {
            let x = rng.tensor([m, k]), w = rng.tensor([n, k], scale: 0.1), b = rng.tensor([n])
            for bias in [b, nil] {
                let layer = Int8Linear(try Linear(weight: w, bias: bias))
                let what = "\(m)x\(k)->\(n)\(bias == nil ? " no bias" : "") on \(Int8Linear.isa)"
                let y = layer(x)
                let rounded = layer.dequantized
                let expected = Reference.linear(x, weight: rounded.weight, bias: bias)
                // A K-term F32 sum in order (a multiply-add per term) errs by at most about
                // (K + 2) u times the sum of |terms| (u = 2^-24), then the scale and the bias.
                let xs = x.scalars, q = rounded.weight.scalars, ys = y.scalars, es = expected.scalars
                for r in 0..<m {
                    for o in 0..<n {
                        var magnitude = Double(abs(bias?.scalars[o] ?? 0))
                        for i in 0..<k { magnitude += abs(Double(xs[r * k + i]) * Double(q[o * k + i])) }
                        let bound = Double(k + 4) * 0x1p-24 * magnitude
                        XCTAssertLessThanOrEqual(abs(Double(ys[r * n + o]) - Double(es[r * n + o])), bound, "\(what) [\(r), \(o)]")
                    }
                }
            }
        }
    }

    func testRoundedWeightsStayWithinHalfAScale() throws {
        var rng = SeededRandom(seed: 62)
        var w = rng.tensor([37, 50], scale: 0.3)
        w.withUnsafeMutableBufferPointer { p in for i in 0..<50 { p[50 + i] = 0 } }  // a zero row
        let layer = Int8Linear(try Linear(weight: w, bias: nil))
        let rounded = layer.dequantized.weight.scalars, original = w.scalars
        for o in 0..<37 {
            let top = original[(o * 50)..<((o + 1) * 50)].map(abs).max()!
            XCTAssertEqual(layer.scales[o], top > 0 ? top / 127 : 1, "row \(o) scale")
            for i in 0..<50 {
                XCTAssertLessThanOrEqual(abs(rounded[o * 50 + i] - original[o * 50 + i]), layer.scales[o] / 2 * (1 + 1e-6), "row \(o) weight \(i)")
            }
        }
        XCTAssertEqual(layer.weightBytes, 3 * 16 * 50, "three panels of 16 rows")
    }

    /// A row's result is the same, bit for bit, alone, among other rows, and on 2 threads.
    func testRowsAreIndependentOfTheirNeighboursAndThreads() throws {
        var rng = SeededRandom(seed: 63)
        let (m, k, n) = (11, 312, 1200)
        let x = rng.tensor([m, k])
        let layer = Int8Linear(try Linear(weight: rng.tensor([n, k], scale: 0.1), bias: rng.tensor([n])))
        let all = layer(x)
        for r in 0..<m {
            XCTAssertEqual(layer(x.rows(r..<(r + 1))).scalars, Array(all.scalars[(r * n)..<((r + 1) * n)]), "row \(r) alone")
        }
        Threads.set(2)
        defer { Threads.set(1) }
        XCTAssertEqual(layer(x).scalars, all.scalars, "2 threads")
    }
}
