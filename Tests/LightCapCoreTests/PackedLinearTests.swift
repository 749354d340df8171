// PackedLinear against its plain twins (the sgemm Linear it keeps, Reference.linear in Double).
import Foundation
import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// PackedLinear (oneDNN matmul on a weight packed once) against its plain twins: the sgemm
/// `Linear` it keeps and `Reference.linear` (Double). Tolerance: 1e-5 relative to the output
/// scale, the Float32 rounding of a K-term dot product (as DenseKernelTests); shapes cover one
/// row, the vocabulary product (20 x 312 by 30522), odd widths, and more rows than one
/// primitive call takes (chunks of `PackedLinear.maxRows`).
final class PackedLinearTests: XCTestCase {
    func testPackedLinearMatchesPlainTwins() throws {
        var rng = SeededRandom(seed: 21)
        let rows = PackedLinear.maxRows
        for (m, inF, outF) in [(1, 1, 1), (1, 312, 312), (20, 312, 30522), (5, 13, 7), (3, 17, 1),
                               (rows + 1, 31, 130), (2 * rows + 3, 17, 64), (7, 1200, 312)] {
            let x = rng.tensor([m, inF])
            let w = rng.tensor([outF, inF], scale: 0.1)
            let b = rng.tensor([outF])
            for bias in [b, nil] {
                let layer = try PackedLinear(weight: w, bias: bias)
                XCTAssertTrue(layer.isPacked, "\(m)x\(inF)->\(outF): oneDNN refused the packed matmul")
                let what = "\(m)x\(inF)->\(outF)\(bias == nil ? " no bias" : "")"
                let fast = layer(x)
                assertClose(fast, layer.plain(x), what + " vs sgemm")
                if m * inF * outF <= 20_000_000 {
                    assertClose(fast, Reference.linear(x, weight: w, bias: bias), what + " vs reference")
                }
            }
        }
    }

    func testPackedLinearKeepsLeadingDimensions() throws {
        var rng = SeededRandom(seed: 22)
        let x = rng.tensor([2, 3, 5])
        let w = rng.tensor([4, 5])
        let y = try PackedLinear(weight: w, bias: nil)(x)
        XCTAssertEqual(y.shape, [2, 3, 4])
        assertClose(y, Reference.linear(x, weight: w, bias: nil), "packed 3-D")
    }

    /// One layer called from several threads at once, with different row counts and oneDNN
    /// thread counts (each a primitive of its own in the shared cache), gives the plain results.
    func testPackedLinearIsSafeAcrossThreads() throws {
        var rng = SeededRandom(seed: 23)
        let w = rng.tensor([1000, 96], scale: 0.1), b = rng.tensor([1000])
        let layer = try PackedLinear(weight: w, bias: b)
        let inputs = (0..<24).map { i in rng.tensor([1 + i % 9, 96]) }
        let expected = inputs.map { layer.plain($0) }
        let results = TensorBox(count: inputs.count)
        DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
            Threads.set(1 + i % 2)
            results.set(i, layer(inputs[i]))
        }
        for i in inputs.indices { assertClose(results.get(i)!, expected[i], "call \(i)") }
    }
}

/// Results written from several threads.
final class TensorBox: @unchecked Sendable {
    private var values: [Tensor?]
    private let lock = NSLock()
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: Tensor) { lock.lock(); values[i] = v; lock.unlock() }
    func get(_ i: Int) -> Tensor? { lock.lock(); defer { lock.unlock() }; return values[i] }
}
