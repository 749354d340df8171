import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// oneDNN convolutions and pools (packed weights, fused bias/ReLU/residual, blocked layouts
/// between ops) against the plain `Reference` loops on random and odd shapes.
final class ConvolutionTests: XCTestCase {
    func testSingleConvolutionsMatchReference() throws {
        var rng = SeededRandom(seed: 31)
        // (in, out, side, kernel, stride, padding, bias, relu)
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, Bool)] = [
            (3, 8, 13, 3, 2, 1, true, true),     // stem-like, odd side
            (3, 5, 9, 3, 1, 1, false, false),
            (17, 33, 7, 1, 1, 0, true, false),   // channels not multiples of 16
            (32, 64, 8, 3, 1, 1, true, true),    // blocked layouts
            (16, 48, 6, 1, 1, 0, true, true),
            (5, 7, 11, 7, 2, 3, true, false),    // 7x7 stride 2
            (1, 1, 1, 1, 1, 0, true, true),
        ]
        for (cin, cout, side, k, stride, pad, hasBias, relu) in cases {
            let x = rng.tensor([cin, side, side])
            let w = rng.tensor([cout, cin, k, k], scale: 0.5)
            let b = hasBias ? rng.tensor([cout]) : nil
            let conv = try Conv2d(weight: w, bias: b, stride: stride, padding: pad)
            let builder = try ConvolutionNetwork.Builder(channels: cin, height: side, width: side)
            let y = try builder.convolution(builder.input, conv, relu: relu)
            let net = try builder.build(output: y)
            var expected = Reference.conv2d(x, weight: w, bias: b, stride: stride, padding: pad)
            if relu { expected = Reference.relu(expected) }
            assertClose(try net(x), Reference.tokens(expected), tolerance: 1e-5, minimumScale: 1e-6, "conv \(cin)->\(cout) k\(k) s\(stride) side \(side)")
            XCTAssertEqual(net.convolutionFlops, 2 * cout * cin * k * k * expected.shape[1] * expected.shape[2])
        }
    }

    /// A bottleneck with downsample: 1x1, 3x3, pool, 1x1 + residual (pooled 1x1 branch), ReLU;
    /// then a second block whose residual is its own input (in-place accumulation).
    func testBottleneckChainMatchesReference() throws {
        for policy in ConvolutionPolicy.allCases {
            var rng = SeededRandom(seed: 32)
            let (cin, planes, side) = (16, 8, 12)
            let x = rng.tensor([cin, side, side])
            func conv(_ o: Int, _ i: Int, _ k: Int) throws -> Conv2d {
                try Conv2d(weight: rng.tensor([o, i, k, k], scale: 0.4), bias: rng.tensor([o], scale: 0.2), stride: 1, padding: k / 2)
            }
            let c1 = try conv(planes, cin, 1), c2 = try conv(planes, planes, 3), c3 = try conv(planes * 4, planes, 1)
            let ds = try conv(planes * 4, cin, 1)
            let d1 = try conv(planes, planes * 4, 1), d2 = try conv(planes, planes, 3), d3 = try conv(planes * 4, planes, 1)

            let b = try ConvolutionNetwork.Builder(channels: cin, height: side, width: side, policy: policy)
            var h = try b.convolution(b.input, c1, relu: true)
            h = try b.convolution(h, c2, relu: true)
            h = try b.averagePool(h, kernel: 2)
            let identity = try b.convolution(try b.averagePool(b.input, kernel: 2), ds, relu: false)
            let block1 = try b.convolution(h, c3, relu: true, residual: identity)
            var g = try b.convolution(block1, d1, relu: true)
            g = try b.convolution(g, d2, relu: true)
            let block2 = try b.convolution(g, d3, relu: true, residual: block1)
            let net = try b.build(output: block2)

            func ref(_ t: Tensor, _ c: Conv2d) -> Tensor { Reference.conv2d(t, weight: c.weight, bias: c.bias, stride: c.stride, padding: c.padding) }
            var r = Reference.relu(ref(x, c1))
            r = Reference.avgPool2d(Reference.relu(ref(r, c2)), kernel: 2)
            let rid = ref(Reference.avgPool2d(x, kernel: 2), ds)
            let rb1 = Reference.relu(Reference.add(ref(r, c3), rid))
            var rg = Reference.relu(ref(rb1, d1))
            rg = Reference.relu(ref(rg, d2))
            let rb2 = Reference.relu(Reference.add(ref(rg, d3), rb1))
            let tolerance: Float = policy == .exact ? 1e-5 : 1e-3
            let ws = try net.makeWorkspace()
            assertClose(try net(x, workspace: ws), Reference.tokens(rb2), tolerance: tolerance, minimumScale: 1e-6, "bottleneck chain \(policy)")
            // A second run on the same workspace gives the same result (no state left behind).
            assertClose(try net(x, workspace: ws), Reference.tokens(rb2), tolerance: tolerance, minimumScale: 1e-6, "bottleneck chain rerun \(policy)")
        }
    }

    /// A network built for two threads gives the reference's result (both policies), runs
    /// on its own thread count and leaves the caller's count as it was.
    func testNetworkBuiltForTwoThreadsMatchesReferenceAndRestoresTheCallersThreads() throws {
        var rng = SeededRandom(seed: 35)
        let x = rng.tensor([32, 16, 16])
        let a = try Conv2d(weight: rng.tensor([64, 32, 1, 1], scale: 0.3), bias: rng.tensor([64], scale: 0.1))
        let w = try Conv2d(weight: rng.tensor([64, 64, 3, 3], scale: 0.1), bias: rng.tensor([64], scale: 0.1), padding: 1)
        func ref(_ t: Tensor, _ k: Conv2d) -> Tensor { Reference.conv2d(t, weight: k.weight, bias: k.bias, stride: k.stride, padding: k.padding) }
        let expected = Reference.tokens(Reference.avgPool2d(Reference.relu(ref(Reference.relu(ref(x, a)), w)), kernel: 2))
        let caller = Threads.current
        for policy in [ConvolutionPolicy.exact, .oneDNNWinograd] {
            let b = try ConvolutionNetwork.Builder(channels: 32, height: 16, width: 16, policy: policy, threads: 2)
            let y = try b.averagePool(try b.convolution(try b.convolution(b.input, a, relu: true), w, relu: true), kernel: 2)
            let net = try b.build(output: y)
            XCTAssertEqual(net.threads, 2)
            XCTAssertEqual(Threads.current, caller, "building changed the caller's thread count")
            assertClose(try net(x), expected, tolerance: policy == .exact ? 1e-5 : 1e-4, minimumScale: 1e-6, "2 threads \(policy)")
            XCTAssertEqual(Threads.current, caller, "running changed the caller's thread count")
        }
        XCTAssertThrowsError(try ConvolutionNetwork.Builder(channels: 3, height: 8, width: 8, threads: 0))
    }

    /// `profile` runs the same ops as `run` (same output), one time per op in order, and its
    /// convolution flops add up to the network's.
    func testProfileTimesEveryOpAndComputesTheSameOutput() throws {
        var rng = SeededRandom(seed: 36)
        let x = rng.tensor([16, 12, 12])
        let a = try Conv2d(weight: rng.tensor([32, 16, 1, 1], scale: 0.3), bias: rng.tensor([32], scale: 0.1))
        let w = try Conv2d(weight: rng.tensor([32, 32, 3, 3], scale: 0.1), bias: nil, padding: 1)
        let b = try ConvolutionNetwork.Builder(channels: 16, height: 12, width: 12)
        let y = try b.averagePool(try b.convolution(try b.convolution(b.input, a, relu: true, label: "a"), w, relu: true, label: "w"),
                                  kernel: 2, label: "pool")
        let net = try b.build(output: y)
        let ws = try net.makeWorkspace()
        let expected = try net(x, workspace: ws)
        var out = Tensor(zeros: expected.shape)
        let times = try x.withUnsafeBufferPointer { xp in
            try out.withUnsafeMutableBufferPointer { yp in try net.profile(input: xp.baseAddress!, output: yp.baseAddress!, workspace: ws, runs: 3) }
        }
        XCTAssertEqual(out.maxAbsDifference(expected), 0, "profile's output differs from run's")
        XCTAssertEqual(times.map(\.label), net.implementations.map(\.label))
        XCTAssertEqual(times.map(\.implementation), net.implementations.map(\.implementation))
        XCTAssertEqual(times.filter { ["a", "w", "pool"].contains($0.label) }.map(\.label), ["a", "w", "pool"])
        XCTAssertEqual(times.reduce(0) { $0 + $1.flops }, net.convolutionFlops)
        XCTAssertTrue(times.allSatisfy { $0.samples.count == 3 && $0.samples.allSatisfy { $0 >= 0 && $0.isFinite } })
        XCTAssertThrowsError(try x.withUnsafeBufferPointer { xp in
            try out.withUnsafeMutableBufferPointer { yp in _ = try net.profile(input: xp.baseAddress!, output: yp.baseAddress!, workspace: ws, runs: 0) }
        })
    }

    /// Winograd layers (3x3 stride 1, side >= 14, >= 64 outputs) between direct 1x1 layers
    /// (layouts differ: reorders in between) against the reference; error bound 1e-4 of scale.
    func testWinogradLayersMatchReference() throws {
        var rng = SeededRandom(seed: 34)
        let x = rng.tensor([32, 16, 16])
        let a = try Conv2d(weight: rng.tensor([64, 32, 1, 1], scale: 0.3), bias: rng.tensor([64], scale: 0.1))
        let w = try Conv2d(weight: rng.tensor([80, 64, 3, 3], scale: 0.1), bias: rng.tensor([80], scale: 0.1), padding: 1)
        let c = try Conv2d(weight: rng.tensor([64, 80, 1, 1], scale: 0.2), bias: nil)
        let b = try ConvolutionNetwork.Builder(channels: 32, height: 16, width: 16, policy: .oneDNNWinograd)
        let h = try b.convolution(b.input, a, relu: true)
        let y = try b.convolution(try b.convolution(h, w, relu: true), c, relu: true, residual: h)
        let net = try b.build(output: y)
        // No layer falls to oneDNN's reference loops: without Winograd kernels the builder takes direct.
        XCTAssertFalse(net.implementations.contains { $0.implementation.hasPrefix("ref") }, "\(net.implementations)")
        func ref(_ t: Tensor, _ k: Conv2d) -> Tensor { Reference.conv2d(t, weight: k.weight, bias: k.bias, stride: k.stride, padding: k.padding) }
        let rh = Reference.relu(ref(x, a))
        let expected = Reference.relu(Reference.add(ref(Reference.relu(ref(rh, w)), c), rh))
        assertClose(try net(x), Reference.tokens(expected), tolerance: 1e-4, minimumScale: 1e-6, "winograd chain")
        if !net.implementations.contains(where: { $0.implementation.contains("avx512") }) {
            // oneDNN's Winograd kernels need AVX-512; without it the builder took the direct kernels
            throw XCTSkip("no AVX-512 on this CPU, so no Winograd kernels: \(net.implementations)")
        }
        XCTAssertTrue(net.implementations.contains { $0.implementation.contains("wino") }, "\(net.implementations)")
    }

    func testAveragePoolMatchesReference() throws {
        var rng = SeededRandom(seed: 33)
        for (c, side, k) in [(3, 8, 2), (20, 12, 3), (32, 14, 2), (1, 4, 4)] {
            let x = rng.tensor([c, side, side])
            let b = try ConvolutionNetwork.Builder(channels: c, height: side, width: side)
            let net = try b.build(output: try b.averagePool(b.input, kernel: k))
            assertClose(try net(x), Reference.tokens(Reference.avgPool2d(x, kernel: k)), tolerance: 1e-6, minimumScale: 1e-6, "avgpool \(c)x\(side) k\(k)")
        }
    }

    func testBadArgumentsAreErrors() throws {
        let b = try ConvolutionNetwork.Builder(channels: 4, height: 6, width: 6)
        XCTAssertThrowsError(try b.convolution(b.input, try Conv2d(weight: Tensor(zeros: [2, 3, 1, 1]), bias: nil), relu: false))
        XCTAssertThrowsError(try b.averagePool(b.input, kernel: 4))
        XCTAssertThrowsError(try Conv2d(weight: Tensor(zeros: [2, 3, 1]), bias: nil))
        XCTAssertThrowsError(try Conv2d(weight: Tensor(zeros: [2, 3, 1, 1]), bias: Tensor(zeros: [3])))
        let net = try b.build(output: try b.averagePool(b.input, kernel: 2))
        XCTAssertThrowsError(try net(Tensor(zeros: [4, 6, 5])))
    }
}
