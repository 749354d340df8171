import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// `a` equals `b` within `tolerance` times b's scale: max |b|, but at least `minimumScale`;
/// shared by the fast kernels' tests of this target (DenseKernelTests, PackedLinearTests, and
/// with minimumScale 1e-6 ConvolutionTests, WinogradConvolutionTests).
func assertClose(_ a: Tensor, _ b: Tensor, tolerance: Float = 1e-5, minimumScale: Float = 1, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, what, file: file, line: line)
    let scale = max(b.maxAbs, minimumScale)
    let diff = a.maxAbsDifference(b)
    XCTAssertLessThanOrEqual(diff, tolerance * scale, "\(what): max abs diff \(diff), scale \(scale)", file: file, line: line)
}

/// Fast kernels against their `Reference` twins on random and odd shapes.
/// Tolerance: 1e-5 relative to the output scale (Float32 accumulation vs Double).
final class DenseKernelTests: XCTestCase {
    func testLinearMatchesReference() throws {
        var rng = SeededRandom(seed: 1)
        for (rows, inF, outF) in [(1, 1, 1), (1, 312, 312), (2, 312, 1200), (7, 13, 5), (49, 2048, 312), (3, 17, 1)] {
            let x = rng.tensor([rows, inF])
            let w = rng.tensor([outF, inF], scale: 0.1)
            let b = rng.tensor([outF])
            let fast = try Linear(weight: w, bias: b)(x)
            assertClose(fast, Reference.linear(x, weight: w, bias: b), "linear \(rows)x\(inF)->\(outF)")
            let noBias = try Linear(weight: w, bias: nil)(x)
            assertClose(noBias, Reference.linear(x, weight: w, bias: nil), "linear no bias \(rows)x\(inF)->\(outF)")
        }
    }

    func testLinearKeepsLeadingDimensions() throws {
        var rng = SeededRandom(seed: 2)
        let x = rng.tensor([2, 3, 5])
        let w = rng.tensor([4, 5])
        let y = try Linear(weight: w, bias: nil)(x)
        XCTAssertEqual(y.shape, [2, 3, 4])
        assertClose(y, Reference.linear(x, weight: w, bias: nil), "linear 3-D")
    }

    func testLinearRejectsMismatchedBias() {
        XCTAssertThrowsError(try Linear(weight: Tensor(zeros: [3, 2]), bias: Tensor(zeros: [2])))
    }

    func testLayerNormMatchesReference() throws {
        var rng = SeededRandom(seed: 3)
        for (rows, size, eps) in [(1, 1, Float(1e-12)), (5, 312, 1e-12), (3, 7, 1e-5), (49, 128, 1e-12)] {
            var x = rng.tensor([rows, size], scale: 3)
            x[flat: 0] += 10  // an offset row mean
            let g = rng.tensor([size]), b = rng.tensor([size])
            let ln = try LayerNorm(weight: g, bias: b, eps: eps)
            assertClose(ln(x), Reference.layerNorm(x, weight: g, bias: b, eps: eps), tolerance: 2e-5, "layernorm \(rows)x\(size)")
        }
    }

    func testGeluMatchesReference() {
        var rng = SeededRandom(seed: 4)
        let x = rng.tensor([7, 131], scale: 6)
        assertClose(Activations.gelu(x), Reference.gelu(x), "gelu")
        // Known values of the erf form (not the tanh approximation): gelu(1) = 0.8413447
        // (= Phi(1), the normal CDF, a textbook constant).
        XCTAssertEqual(Activations.gelu(Tensor(shape: [1], scalars: [1]))[flat: 0], 0.8413447, accuracy: 1e-6)
    }

    func testSoftmaxMatchesReference() {
        var rng = SeededRandom(seed: 5)
        for shape in [[1, 1], [3, 17], [12, 101], [2, 3, 5]] {
            var x = rng.tensor(shape, scale: 20)
            x[flat: 0] = -10000
            assertClose(Activations.softmax(x), Reference.softmax(x), "softmax \(shape)")
        }
        let masked = Activations.softmax(Tensor(shape: [1, 3], scalars: [-.infinity, 0, -.infinity]))
        XCTAssertEqual(masked.scalars, [0, 1, 0])
    }

    func testMatmulMatchesReference() {
        var rng = SeededRandom(seed: 6)
        for (m, k, n) in [(1, 1, 1), (5, 7, 3), (49, 26, 49), (2, 64, 1000)] {
            let a = rng.tensor([m, k]), b = rng.tensor([k, n]), bt = rng.tensor([n, k])
            assertClose(Matmul.matmul(a, b), Reference.matmul(a, b), "matmul \(m)x\(k)x\(n)")
            assertClose(Matmul.matmul(a, bt, transposeB: true), Reference.matmul(a, bt, transposeB: true), "matmul^T \(m)x\(k)x\(n)")
        }
    }

    func testAttentionMatchesReference() {
        var rng = SeededRandom(seed: 7)
        // Both paths: up to Attention.fewQueries query rows (decoding) and more.
        for (tq, tk, heads, d) in [(1, 1, 1, 1), (2, 80, 12, 26), (33, 33, 4, 32), (5, 9, 3, 7), (2, 45, 4, 32), (4, 21, 2, 19),
                                   (Attention.fewQueries + 1, 30, 4, 32)] {
            let q = rng.tensor([tq, heads * d]), k = rng.tensor([tk, heads * d]), v = rng.tensor([tk, heads * d])
            var mask = Tensor(zeros: [tq, tk])
            for i in 0..<tq { for j in 0..<tk where (i + j) % 3 == 1 && j != 0 { mask[i, j] = -10000 } }
            assertClose(Attention.multiHead(query: q, key: k, value: v, heads: heads, mask: mask),
                        Reference.attention(query: q, key: k, value: v, heads: heads, mask: mask), "attention \(tq)x\(tk)x\(heads)x\(d)")
            assertClose(Attention.multiHead(query: q, key: k, value: v, heads: heads, mask: nil),
                        Reference.attention(query: q, key: k, value: v, heads: heads, mask: nil), "attention no mask")
        }
    }

    /// Keys and values in two blocks (a decoding step's shared image rows, then its caption rows)
    /// give the same bits as the same rows in one block, at every split.
    func testAttentionOverTwoBlocksEqualsOneBlock() {
        var rng = SeededRandom(seed: 8)
        for (tq, tk, heads, d) in [(2, 83, 12, 26), (1, 17, 3, 7), (4, 40, 2, 19), (2, 9, 4, 32)] {
            let q = rng.tensor([tq, heads * d]), k = rng.tensor([tk, heads * d]), v = rng.tensor([tk, heads * d])
            var mask = Tensor(zeros: [tq, tk])
            for i in 0..<tq { mask[i, tk - 1 - i] = -10000 }
            let whole = Attention.multiHead(query: q, key: k, value: v, heads: heads, mask: mask)
            let w = heads * d
            for split in Set([0, 1, 7, 8, 9, tk / 2, tk - 1, tk]) {
                let (k1, k2) = (Array(k.scalars[..<(split * w)]), Array(k.scalars[(split * w)...]))
                let (v1, v2) = (Array(v.scalars[..<(split * w)]), Array(v.scalars[(split * w)...]))
                var out = [Float](repeating: .nan, count: tq * w), scratch = [Float](repeating: 0, count: tq * tk)
                q.withUnsafeBufferPointer { qp in
                    mask.withUnsafeBufferPointer { m in
                        // One spare row so that an empty block still has an address.
                        (k1 + [0]).withUnsafeBufferPointer { a in (v1 + [0]).withUnsafeBufferPointer { b in
                            (k2 + [0]).withUnsafeBufferPointer { c in (v2 + [0]).withUnsafeBufferPointer { e in
                                Attention.fewQueries(query: qp.baseAddress!, queryStride: w, tq: tq,
                                                     first: (a.baseAddress!, b.baseAddress!, split),
                                                     then: (c.baseAddress!, e.baseAddress!, tk - split),
                                                     heads: heads, headDim: d, mask: m.baseAddress!,
                                                     scratch: &scratch, output: &out)
                            } }
                        } }
                    }
                }
                XCTAssertEqual(out.map(\.bitPattern), whole.scalars.map(\.bitPattern), "\(tq)x\(tk)x\(heads)x\(d), split \(split)")
            }
        }
    }

    func testThreadsSetting() {
        Threads.set(1)
        XCTAssertEqual(Threads.current, 1)
        Threads.set(2)
        XCTAssertEqual(Threads.current, 2)
    }
}
