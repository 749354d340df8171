// The INT8 vocabulary product on worst-case rows: every input level at +-127 and every weight row
// carrying the sign pattern of an input row (or its opposite), so that each pair of products that
// a u8 x s8 kernel adds into int16 is as large as the levels allow. With 8-bit weights oneDNN's
// AVX2 kernels saturate on these rows (the product is then silently wrong); the decoder's levels
// (8-bit with VNNI, 7-bit without) must give the exact integer product on any CPU. The test
// script runs this file a second time under DNNL_MAX_CPU_ISA=AVX2, so the non-VNNI kernels and
// their 7-bit weights are checked on every host.
// Twins: the integer product computed here in Int, and the logits in Double from the F32 rows.
import XCTest
@testable import LightCapCore
@testable import LightCapModel
import LightCapTestSupport

final class QuantizedDecoderTests: XCTestCase {
    /// Input rows [M, D] of random signs at full scale, weights [V, D] whose row n has the signs of
    /// input row n % M (negated for odd n / M) and magnitudes in [0.9, 1].
    func worstCase(rows m: Int, vocabulary v: Int, width d: Int, seed: UInt64) -> (x: Tensor, weight: Tensor) {
        var random = SeededRandom(seed: seed)
        let signs = (0..<(m * d)).map { _ in random.uniform(1) < 0 ? Float(-1) : Float(1) }
        let x = Tensor(shape: [m, d], scalars: signs.map { $0 * 0.5 })
        var w = [Float](repeating: 0, count: v * d)
        for n in 0..<v {
            let flip: Float = (n / m) % 2 == 0 ? 1 : -1
            for k in 0..<d { w[n * d + k] = flip * signs[(n % m) * d + k] * (0.95 + random.uniform(0.05)) }
        }
        return (x, Tensor(shape: [v, d], scalars: w))
    }

    func testIntegerProductIsExactOnWorstCaseRows() {
        for (m, v, d) in [(1, 4099, 312), (3, 2048, 128), (8, 1000, 312)] {
            let (x, weight) = worstCase(rows: m, vocabulary: v, width: d, seed: UInt64(m * 1000 + d))
            let decoder = QuantizedDecoder(weight: weight, bias: [Float](repeating: 0, count: v))
            var xq = [Int8](repeating: 0, count: m * d)
            _ = x.withUnsafeBufferPointer { p in
                xq.withUnsafeMutableBufferPointer { RowQuantization(p, width: d, levels: QuantizedDecoder.inputLevels, into: $0) }
            }
            XCTAssertEqual(xq.map { abs(Int($0)) }.min(), 127, "the input is at full scale")
            XCTAssertEqual((0..<(v * d)).map { abs(Int(decoder.quantized[$0])) }.max(), QuantizedDecoder.weightLevels)
            let product = decoder.integerProduct(xq, rows: m)
            var wrong = 0
            for r in 0..<m {
                for n in 0..<v {
                    var sum = 0
                    for k in 0..<d { sum += Int(xq[r * d + k]) * Int(decoder.quantized[n * d + k]) }
                    if Int(product[r * v + n]) != sum { wrong += 1 }
                }
            }
            XCTAssertEqual(wrong, 0, "\(m) x \(v) x \(d): integer products that differ from the exact sum")
        }
    }

    /// On the same rows (plus a bias), every approximate logit is within the stated bound of the
    /// exact one, and the argmax and its logit are exact: through oneDNN's integer product, and
    /// through the weight-only kernel (the path of hosts without VNNI), each on every host.
    func testLogitsWithinTheirBoundOnWorstCaseRows() {
        for weightOnly in [false, true] { checkBounds(weightOnly: weightOnly) }
    }

    func checkBounds(weightOnly: Bool) {
        let (m, v, d) = (4, 3001, 312)
        let (x, weight) = worstCase(rows: m, vocabulary: v, width: d, seed: 5)
        var random = SeededRandom(seed: 6)
        let bias = (0..<v).map { _ in random.uniform(2) }
        let decoder = QuantizedDecoder(weight: weight, bias: bias, weightOnly: weightOnly)
        XCTAssertEqual(decoder.weightOnly != nil, weightOnly)
        // The weight-only twin: the rounded rows as the kernel holds them, their distance to the
        // F32 rows, and ||x|| (the input is not rounded).
        let rounded = decoder.weightOnly?.linear.dequantized.weight.scalars ?? []
        let fast = decoder.logits(x)
        var xq = [Int8](repeating: 0, count: m * d)
        let input = x.withUnsafeBufferPointer { p in
            xq.withUnsafeMutableBufferPointer { RowQuantization(p, width: d, levels: QuantizedDecoder.inputLevels, into: $0) }
        }
        let xs = x.scalars, ws = weight.scalars
        for r in 0..<m {
            var exact = [Double](repeating: 0, count: v)
            for n in 0..<v {
                var dot = Double(bias[n])
                for k in 0..<d { dot += Double(xs[r * d + k]) * Double(ws[n * d + k]) }
                exact[n] = dot
            }
            let best = exact.indices.max { exact[$0] < exact[$1] || (exact[$0] == exact[$1] && $0 > $1) }!
            let fastBest = fast[r].indices.max { fast[r][$0] < fast[r][$1] || (fast[r][$0] == fast[r][$1] && $0 > $1) }!
            XCTAssertEqual(fastBest, best, "weight-only \(weightOnly) row \(r): argmax")
            XCTAssertEqual(Double(fast[r][best]), exact[best], accuracy: 1e-5 * max(1, abs(exact[best])),
                           "weight-only \(weightOnly) row \(r): logit at argmax")
            let xNorm = (0..<d).reduce(0.0) { $0 + Double(xs[r * d + $1]) * Double(xs[r * d + $1]) }.squareRoot()
            var outside = 0, loosest = 0.0
            for n in 0..<v {
                var bound = 1e-5 * (1 + abs(exact[n]))
                if weightOnly {
                    var error = 0.0, norm = 0.0
                    for k in 0..<d {
                        let (a, b) = (Double(ws[n * d + k]), Double(rounded[n * d + k]))
                        error += (a - b) * (a - b)
                        norm += b * b
                    }
                    bound += xNorm * error.squareRoot() + Double(d + 4) * 0x1p-24 * xNorm * norm.squareRoot()
                } else {
                    bound += Double(input.errorNorms[r] * decoder.rowNorms[n] + input.quantizedNorms[r] * decoder.errorNorms[n])
                }
                loosest = max(loosest, abs(Double(fast[r][n]) - exact[n]) / bound)
                if abs(Double(fast[r][n]) - exact[n]) > bound { outside += 1 }
            }
            XCTAssertEqual(outside, 0, "weight-only \(weightOnly) row \(r): logits outside their error bound")
            XCTAssertGreaterThan(loosest, 0.01, "weight-only \(weightOnly) row \(r): the logits are not approximate")
        }
    }

    /// Beam search's rows (`exactTop` k): on random rows, and on rows whose best logits are
    /// packed closer than the quantisation error (near ties), the k largest of each returned row
    /// are the exact row's k largest (rounded to Float), in order, with their exact values; every other logit stays
    /// within its bound (checked above), so it never passes them.
    func testTopLogitsAreExact() {
        let (m, v, d) = (5, 4003, 312)
        var random = SeededRandom(seed: 7)
        var w = (0..<(v * d)).map { _ in random.uniform(0.1) }
        // Rows 0..<40 nearly equal: their logits differ by far less than the INT8 error.
        for n in 1..<40 { for k in 0..<d { w[n * d + k] = w[k] + random.uniform(1e-5) } }
        let weight = Tensor(shape: [v, d], scalars: w)
        let bias = (0..<v).map { n in n < 40 ? Float(0) : random.uniform(0.5) }
        let x = Tensor(shape: [m, d], scalars: (0..<(m * d)).map { i in
            // Row 0 points at the near-tied rows; the others are random.
            i < d ? w[i] * 10 : random.uniform(1)
        })
        for weightOnly in [false, true] {
        let decoder = QuantizedDecoder(weight: weight, bias: bias, weightOnly: weightOnly)
        for k in [1, 2, 10, 37] {
            let fast = decoder.logits(x, exactTop: k)
            for r in 0..<m {
                var exact = [Double](repeating: 0, count: v)
                for n in 0..<v {
                    var dot = Double(bias[n])
                    for t in 0..<d { dot += Double(x.scalars[r * d + t]) * Double(w[n * d + t]) }
                    exact[n] = dot
                }
                func order(_ values: [Double]) -> [Int] {
                    Array(values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }.prefix(k))
                }
                let expected = order(exact.map { Double(Float($0)) })  // as the decoder rounds them
                XCTAssertEqual(order(fast[r].map(Double.init)), expected, "weight-only \(weightOnly) k \(k) row \(r): the k largest")
                for n in expected {
                    XCTAssertEqual(Double(fast[r][n]), exact[n], accuracy: 1e-6 * max(1, abs(exact[n])),
                                   "weight-only \(weightOnly) k \(k) row \(r) token \(n)")
                }
            }
        }
        }
    }
}
