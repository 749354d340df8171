import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// LightCap's average pool (`AveragePool`, the kernel in CKernels) against the plain
/// `Reference.avgPool2d` (PyTorch's `AvgPool2d(k)`): every channel layout, windows of 1 to 4
/// (2 and 4 multiply by the exact inverse, 3 divides), sides not multiples of the window
/// (floored); on two threads; and in a network, where it replaces oneDNN's pooling.
///
/// Tolerance: 1e-6 of the output's scale against the reference (a float sum of k^2 values
/// against its double one), none against the float twin of PyTorch's arithmetic; a wrong tap,
/// pixel, channel chunk or layout gives errors of order 1.
final class AveragePoolTests: XCTestCase {
    /// Runs `pool` on the CHW tensor `x`: reorders it into the pool's layout, runs, reorders
    /// the result back to CHW.
    func run(_ pool: AveragePool, _ x: Tensor, threads: Int = 1) throws -> Tensor {
        let src = try pool.layout.buffer(holding: x)
        let outShape = [pool.channels, pool.outHeight, pool.outWidth]
        let dst = DNNL.Buffer(bytes: outShape.reduce(1, *) * MemoryLayout<Float>.size)
        Threads.with(threads) {
            pool.run(src: src.pointer.assumingMemoryBound(to: Float.self), dst: dst.pointer.assumingMemoryBound(to: Float.self),
                     threads: threads)
        }
        return try pool.layout.tensor(outShape, from: dst)
    }

    /// PyTorch's float arithmetic for `AvgPool2d(k)` on CPU: the taps summed in float, row by
    /// row, then divided by k * k; the kernel's vectors do the same, so it must agree to the bit.
    func floatTwin(_ x: Tensor, kernel k: Int) -> Tensor {
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let xs = x.scalars
        var out: [Float] = []
        for ch in 0..<c {
            for oy in 0..<h / k {
                for ox in 0..<w / k {
                    var sum: Float = 0
                    for dy in 0..<k { for dx in 0..<k { sum += xs[(ch * h + oy * k + dy) * w + ox * k + dx] } }
                    out.append(sum / Float(k * k))
                }
            }
        }
        return Tensor(shape: [c, h / k, w / k], scalars: out)
    }

    func testMatchesReferenceInEveryLayout() throws {
        var rng = SeededRandom(seed: 61)
        // (channels, height, width, kernel)
        let cases = [(64, 28, 28, 2), (16, 7, 9, 2), (24, 6, 6, 3), (32, 8, 11, 4), (16, 5, 3, 1), (48, 14, 14, 2)]
        for (c, h, w, k) in cases {
            let x = rng.tensor([c, h, w])
            let expected = Reference.avgPool2d(x, kernel: k)
            for layout in ChannelLayout.allCases where layout.fits(c) {
                let pool = try AveragePool(channels: c, height: h, width: w, kernel: k, layout: layout)
                XCTAssertEqual([pool.outHeight, pool.outWidth], [h / k, w / k])
                let y = try run(pool, x)
                assertClose(y, expected, tolerance: 1e-6, minimumScale: 1e-6, "\(c)x\(h)x\(w) k\(k) \(layout) on \(LightCapKernels.isa)")
                XCTAssertEqual(y.scalars, floatTwin(x, kernel: k).scalars, "\(c)x\(h)x\(w) k\(k) \(layout): float twin")
            }
        }
    }

    /// Each output is summed by one thread in the same order: the same result to the bit.
    func testTwoThreadsGiveTheSameResult() throws {
        XCTAssertTrue(LightCapKernels.threadsFromOpenMP, "libgomp's GOMP_parallel not found beside oneDNN")
        var rng = SeededRandom(seed: 62)
        let x = rng.tensor([40, 10, 12])
        for k in [2, 3] {
            let pool = try AveragePool(channels: 40, height: 10, width: 12, kernel: k, layout: .nChw8c)
            XCTAssertEqual(try run(pool, x).scalars, try run(pool, x, threads: 2).scalars, "k\(k): 2 threads vs 1")
        }
    }

    /// In a network: the pools after a convolution are LightCap's under `.exact` and
    /// `.lightcapWinograd`, oneDNN's under `.oneDNN` and on the network's input (which has no
    /// buffer of its own); the results agree with the reference either way, on one and two
    /// threads.
    func testNetworkTakesItAfterConvolutions() throws {
        var rng = SeededRandom(seed: 63)
        let x = rng.tensor([16, 12, 12])
        let a = try Conv2d(weight: rng.tensor([32, 16, 1, 1], scale: 0.3), bias: rng.tensor([32], scale: 0.1))
        let c = try Conv2d(weight: rng.tensor([32, 32, 3, 3], scale: 0.1), bias: nil, padding: 1)
        func ref(_ t: Tensor, _ k: Conv2d) -> Tensor { Reference.conv2d(t, weight: k.weight, bias: k.bias, stride: k.stride, padding: k.padding) }
        let inputPool = Reference.avgPool2d(x, kernel: 2)
        let expected = Reference.tokens(Reference.avgPool2d(ref(Reference.avgPool2d(Reference.relu(ref(inputPool, a)), kernel: 2), c), kernel: 3))
        for threads in [1, 2] {
            for policy in [ConvolutionPolicy.exact, .oneDNN, .lightcapWinograd] {
                let b = try ConvolutionNetwork.Builder(channels: 16, height: 12, width: 12, policy: policy, threads: threads)
                var h = try b.averagePool(b.input, kernel: 2, label: "input pool")
                h = try b.averagePool(try b.convolution(h, a, relu: true), kernel: 2, label: "second pool")
                let net = try b.build(output: try b.averagePool(try b.convolution(h, c, relu: false), kernel: 3, label: "third pool"))
                let pools = Dictionary(uniqueKeysWithValues: net.implementations.filter { $0.label.hasSuffix("pool") }
                    .map { ($0.label, $0.implementation) })
                XCTAssertFalse(pools["input pool"]!.hasPrefix("lightcap"), "\(policy): \(pools)")
                for label in ["second pool", "third pool"] {
                    XCTAssertEqual(pools[label]!.hasPrefix("lightcap_pool"), policy != .oneDNN, "\(policy): \(pools)")
                }
                let ws = try net.makeWorkspace()
                let y = try net(x, workspace: ws)
                assertClose(y, expected, tolerance: 1e-5, minimumScale: 1e-6, "\(policy), \(threads) thread(s)")
                assertClose(try net(x, workspace: ws), y, tolerance: 0, minimumScale: 1e-6, "\(policy) rerun")
            }
        }
    }

    /// Channels that don't fit the layout, and windows that don't fit the input, are errors
    /// that say so.
    func testBadShapesAreErrors() {
        let bad: [(() throws -> AveragePool, String)] = [
            ({ try AveragePool(channels: 12, height: 4, width: 4, kernel: 2, layout: .nChw8c) }, "12 channels do not fit"),
            ({ try AveragePool(channels: 24, height: 4, width: 4, kernel: 2, layout: .nChw16c) }, "24 channels do not fit"),
            ({ try AveragePool(channels: 12, height: 4, width: 4, kernel: 2, layout: .nhwc) }, "12 channels do not fit"),
            ({ try AveragePool(channels: 8, height: 4, width: 4, kernel: 0, layout: .nhwc) }, "0x0 window"),
            ({ try AveragePool(channels: 8, height: 2, width: 4, kernel: 3, layout: .nChw8c) }, "3x3 window does not fit 2x4"),
        ]
        for (make, message) in bad {
            XCTAssertThrowsError(try make(), message) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error)")
            }
        }
    }
}
