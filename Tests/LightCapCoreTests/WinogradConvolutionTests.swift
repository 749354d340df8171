import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport
import CKernels

/// LightCap's own Winograd F(4x4, 3x3) and F(2x2, 3x3) (`WinogradConvolution`, transforms and the few-tile
/// products kernel in CKernels) against the plain `Reference` convolution, with the products
/// from oneDNN's matmul and from the panel kernel, in every channel layout it reads and writes,
/// on odd sides (partial tiles), with and without bias and ReLU, padding 0 to 2.
///
/// Tolerance: 1e-4 of the output's scale. F(4x4, 3x3) in single precision scales values by up
/// to ~100 in its transforms, so it is less exact than a direct convolution (1e-5 there); a
/// wrong transform coefficient, a wrong tile edge, a wrong layout or a wrong panel gives errors
/// of order 1.
final class WinogradConvolutionTests: XCTestCase {
    /// Runs `w` on the CHW tensor `x`: reorders x into w's source layout, runs, reorders the
    /// result back to CHW.
    func run(_ w: WinogradConvolution, _ x: Tensor, threads: Int = 1) throws -> Tensor {
        let src = try w.srcLayout.buffer(holding: x)
        let outShape = [w.outChannels, w.outHeight, w.outWidth]
        let dst = DNNL.Buffer(bytes: outShape.reduce(1, *) * 4)
        let v = DNNL.Buffer(bytes: w.inputTransformCount * 4), m = DNNL.Buffer(bytes: w.productCount * 4)
        let scratch = DNNL.Buffer(bytes: w.matmul.scratchpadBytes)
        var keep: [DNNL.Memory] = []
        let args = try w.arguments(v: v.pointer, m: m.pointer, scratchpad: scratch.pointer, keep: &keep)
        let stream = try DNNL.Stream()
        try Threads.with(threads) {
            try w.run(src: src.pointer.assumingMemoryBound(to: Float.self), dst: dst.pointer.assumingMemoryBound(to: Float.self),
                      v: v.pointer.assumingMemoryBound(to: Float.self), m: m.pointer.assumingMemoryBound(to: Float.self),
                      arguments: args, stream: stream, threads: threads)
        }
        return try w.dstLayout.tensor(outShape, from: dst)
    }

    func testMatchesReferenceInEveryLayout() throws {
        var rng = SeededRandom(seed: 41)
        // (in, out, height, width, padding, bias, relu)
        let cases: [(Int, Int, Int, Int, Int, Bool, Bool)] = [
            (16, 32, 13, 9, 1, true, true),   // partial tiles on both sides
            (32, 16, 8, 8, 1, true, false),   // whole tiles
            (16, 16, 7, 7, 1, false, true),   // RN50's last stage side
            (16, 48, 5, 11, 0, true, false),  // no padding
            (32, 16, 3, 4, 2, true, true),    // padding 2, fewer pixels than one tile
            (16, 16, 1, 1, 1, true, false),   // one pixel
            (16, 24, 7, 10, 1, true, true),   // 24 outputs: whole panels of 6
            (16, 40, 6, 5, 1, true, false),   // 40 outputs: a last panel of 4
            (520, 32, 6, 5, 1, true, true),   // more input channels than the panel kernel's chunk (512)
        ]
        for (cin, cout, h, wd, pad, hasBias, relu) in cases {
            let x = rng.tensor([cin, h, wd])
            let weight = rng.tensor([cout, cin, 3, 3], scale: 0.3)
            let b = hasBias ? rng.tensor([cout], scale: 0.2) : nil
            let conv = try Conv2d(weight: weight, bias: b, stride: 1, padding: pad)
            var expected = Reference.conv2d(x, weight: weight, bias: b, stride: 1, padding: pad)
            if relu { expected = Reference.relu(expected) }
            for src in ChannelLayout.allCases where src.fits(cin) {
                for dst in ChannelLayout.allCases where dst.fits(cout) {
                    for tile in [4, 2] {
                        for panels in [false, true] {
                            let w = try WinogradConvolution(conv, height: h, width: wd, relu: relu, srcLayout: src, dstLayout: dst,
                                                            tile: tile, panels: panels)
                            XCTAssertEqual(w.implementation.hasSuffix("+panels"), panels, w.implementation)
                            XCTAssertTrue(w.implementation.hasPrefix("lightcap_wino_\(tile)x3"), w.implementation)
                            assertClose(try run(w, x), expected, tolerance: 1e-4, minimumScale: 1e-6,
                                        "F(\(tile)x\(tile)) panels \(panels) \(cin)->\(cout) \(h)x\(wd) pad \(pad) \(src)->\(dst)")
                        }
                    }
                }
            }
        }
    }

    /// The weight transform (C, float, 8 output channels per vector, input channels split over
    /// threads), plain and packed in panels of 6 output channels, against its plain twin in
    /// Double, on shapes with odd input channel counts and partial panels.
    func testWeightTransformMatchesPlainTwin() throws {
        var rng = SeededRandom(seed: 40)
        for (cout, cin) in [(8, 1), (16, 3), (24, 17), (64, 32)] {
            let weight = rng.tensor([cout, cin, 3, 3], scale: 0.5)
            for tile in [4, 2] {
                let points = (tile + 2) * (tile + 2)
                let plain = WinogradConvolution.transformedWeights(weight, tile: tile)
                let expected = Tensor(shape: [points, cin, cout], scalars: plain)
                let panels = (cout + 5) / 6
                // The same values in the panel layout [points, panels, in, 6], zeros past `cout`.
                let expectedPanels = Tensor(shape: [points, panels, cin, 6]) { i in
                    let (xi, q, c, j) = (i / (panels * cin * 6), i / (cin * 6) % panels, i / 6 % cin, i % 6)
                    let k = q * 6 + j
                    return k < cout ? plain[(xi * cin + c) * cout + k] : 0
                }
                XCTAssertEqual(lightcap_winograd_panel_floats(tile, cin, cout), expectedPanels.count)
                for threads in [1, 2] {
                    let what = "F(\(tile)x\(tile)) \(cout)x\(cin) on \(threads) thread(s)"
                    let u = TensorStorage(count: points * cin * cout)
                    WinogradConvolution.transformWeights(weight, tile: tile, into: u.base, threads: threads)
                    assertClose(Tensor(shape: [points, cin, cout], storage: u), expected, tolerance: 1e-6, minimumScale: 1e-6, what)
                    let p = TensorStorage(count: expectedPanels.count)
                    WinogradConvolution.transformWeights(weight, tile: tile, into: p.base, panels: true, threads: threads)
                    assertClose(Tensor(shape: [points, panels, cin, 6], storage: p), expectedPanels, tolerance: 1e-6,
                                minimumScale: 1e-6, what + " in panels")
                }
            }
        }
    }

    /// The vector path the transforms and the panel kernel take: the generic one under
    /// LIGHTCAP_KERNEL_ISA=generic (test.sh reruns this file so, which tests that path on AVX2
    /// hosts), else AVX2 + FMA where the CPU has them.
    func testVectorPathFollowsTheCPUAndTheCap() throws {
        if ProcessInfo.processInfo.environment["LIGHTCAP_KERNEL_ISA"]?.lowercased() == "generic" {
            XCTAssertEqual(LightCapKernels.isa, "generic")
            return
        }
        #if arch(x86_64)
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        guard let flags = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
            throw XCTSkip("no CPU flags in /proc/cpuinfo")
        }
        let names = Set(flags.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
        XCTAssertEqual(LightCapKernels.isa, names.contains("avx2") && names.contains("fma") ? "avx2+fma" : "generic")
        #else
        XCTAssertEqual(LightCapKernels.isa, "generic")
        #endif
    }

    /// The transforms split their tiles, the panel kernel its points, over two threads (of
    /// oneDNN's OpenMP team): the same result as one thread.
    func testTwoThreadsGiveTheSameResult() throws {
        XCTAssertTrue(LightCapKernels.threadsFromOpenMP, "libgomp's GOMP_parallel not found beside oneDNN")
        var rng = SeededRandom(seed: 42)
        let x = rng.tensor([24, 17, 15])
        let conv = try Conv2d(weight: rng.tensor([40, 24, 3, 3], scale: 0.3), bias: rng.tensor([40]), stride: 1, padding: 1)
        for (tile, panels) in [(4, false), (4, true), (2, false), (2, true)] {
            let w = try WinogradConvolution(conv, height: 17, width: 15, relu: true, srcLayout: .nhwc, dstLayout: .nChw8c,
                                            tile: tile, panels: panels)
            let one = try run(w, x), two = try run(w, x, threads: 2)
            let what = "F(\(tile)x\(tile)) panels \(panels)"
            assertClose(two, one, tolerance: 1e-6, minimumScale: 1e-6, what + ": 2 threads vs 1")
            assertClose(one, Reference.relu(Reference.conv2d(x, weight: conv.weight, bias: conv.bias, stride: 1, padding: 1)),
                        tolerance: 1e-4, minimumScale: 1e-6, what + ": against the reference")
        }
    }

    /// The panel kernel, as chosen by tile count, on a larger product (16 tiles: one block of
    /// two tile vectors; 96 -> 80 channels: 14 panels, the last of 2); 49 tiles take oneDNN's
    /// matmul.
    func testPanelKernelOnRN50LikeShape() throws {
        var rng = SeededRandom(seed: 45)
        let conv = try Conv2d(weight: rng.tensor([80, 96, 3, 3], scale: 0.05), bias: rng.tensor([80], scale: 0.1), padding: 1)
        for (side, panels) in [(14, true), (28, false)] {
            let x = rng.tensor([96, side, side])
            let expected = Reference.conv2d(x, weight: conv.weight, bias: conv.bias, stride: 1, padding: 1)
            let w = try WinogradConvolution(conv, height: side, width: side, relu: false, srcLayout: .nChw16c, dstLayout: .nChw16c)
            XCTAssertEqual(w.tiles, (side + 3) / 4 * ((side + 3) / 4))
            XCTAssertEqual(w.implementation.hasSuffix("+panels"), panels, w.implementation)
            for threads in [1, 2] {
                assertClose(try run(w, x, threads: threads), expected, tolerance: 1e-4, minimumScale: 1e-6,
                            "side \(side), \(threads) thread(s)")
            }
        }
    }

    /// In a network (`.lightcapWinograd`): 3x3 layers between 1x1 layers, a residual, a pool, on
    /// one and two threads, against the reference; the 3x3 layers really are LightCap's.
    func testNetworkWithLightCapWinogradLayersMatchesReference() throws {
        var rng = SeededRandom(seed: 43)
        let x = rng.tensor([32, 14, 14])
        let a = try Conv2d(weight: rng.tensor([64, 32, 1, 1], scale: 0.3), bias: rng.tensor([64], scale: 0.1))
        let w = try Conv2d(weight: rng.tensor([64, 64, 3, 3], scale: 0.1), bias: rng.tensor([64], scale: 0.1), padding: 1)
        let c = try Conv2d(weight: rng.tensor([64, 64, 1, 1], scale: 0.2), bias: nil)
        let w2 = try Conv2d(weight: rng.tensor([32, 64, 3, 3], scale: 0.1), bias: nil, padding: 1)
        func ref(_ t: Tensor, _ k: Conv2d) -> Tensor { Reference.conv2d(t, weight: k.weight, bias: k.bias, stride: k.stride, padding: k.padding) }
        let rh = Reference.relu(ref(x, a))
        let rb = Reference.relu(Reference.add(ref(Reference.relu(ref(rh, w)), c), rh))
        let expected = Reference.tokens(Reference.avgPool2d(ref(rb, w2), kernel: 2))
        for threads in [1, 2] {
            let b = try ConvolutionNetwork.Builder(channels: 32, height: 14, width: 14, policy: .lightcapWinograd, threads: threads)
            let h = try b.convolution(b.input, a, relu: true)
            let block = try b.convolution(try b.convolution(h, w, relu: true, label: "w"), c, relu: true, residual: h)
            let y = try b.averagePool(try b.convolution(block, w2, relu: false, label: "w2"), kernel: 2)
            let net = try b.build(output: y)
            let kinds = net.implementations.filter { ["w", "w2"].contains($0.label) }.map(\.implementation)
            XCTAssertEqual(kinds.count, 2)
            XCTAssertTrue(kinds.allSatisfy { $0.hasPrefix("lightcap_wino_4x3") && $0.hasSuffix("+panels") },
                          "\(net.implementations)")  // 16 tiles each
            XCTAssertEqual(net.convolutionFlops, 2 * 14 * 14 * (64 * 32 + 64 * 64 * 9 + 64 * 64 + 32 * 64 * 9))
            let ws = try net.makeWorkspace()
            assertClose(try net(x, workspace: ws), expected, tolerance: 1e-4, minimumScale: 1e-6, "lightcap-winograd network, \(threads) thread(s)")
            assertClose(try net(x, workspace: ws), expected, tolerance: 1e-4, minimumScale: 1e-6, "rerun, \(threads) thread(s)")
        }
    }

    /// The network picks the tile by output side: F(4x4) at 12 and more, F(2x2) at 6 to 11,
    /// direct below (LightCap's direct kernel where it beats oneDNN's, `DirectConvolutionTests`);
    /// the products of fewer than 32 tiles go to the panel kernel.
    func testNetworkPicksTheTileBySide() throws {
        var rng = SeededRandom(seed: 46)
        let conv = try Conv2d(weight: rng.tensor([16, 16, 3, 3], scale: 0.2), bias: rng.tensor([16], scale: 0.1), padding: 1)
        // (side, kind, panels): tiles 9 at side 12, 36 at 11, 16 at 7, 9 at 6
        for (side, expected, panels) in [(12, "lightcap_wino_4x3", true), (11, "lightcap_wino_2x3", false),
                                         (7, "lightcap_wino_2x3", true), (6, "lightcap_wino_2x3", true), (5, "direct", false)] {
            let x = rng.tensor([16, side, side])
            let b = try ConvolutionNetwork.Builder(channels: 16, height: side, width: side, policy: .lightcapWinograd)
            let net = try b.build(output: try b.convolution(b.input, conv, relu: true, label: "w"))
            let kind = try XCTUnwrap(net.implementations.first { $0.label == "w" }).implementation
            if expected == "direct" {
                XCTAssertFalse(kind.hasPrefix("lightcap_wino"), "side \(side): \(kind)")  // oneDNN's kernel or LightCap's direct one
            } else {
                XCTAssertTrue(kind.hasPrefix(expected), "side \(side): \(kind)")
            }
            XCTAssertEqual(kind.hasSuffix("+panels"), panels, "side \(side): \(kind)")
            assertClose(try net(x), Reference.tokens(Reference.relu(Reference.conv2d(x, weight: conv.weight, bias: conv.bias, stride: 1, padding: 1))),
                        tolerance: 1e-4, minimumScale: 1e-6, "side \(side)")
        }
    }

    /// Convolutions Winograd can't compute are errors that say why; in a network they take
    /// the direct kernel.
    func testUnsupportedConvolutionsAreErrorsOrDirect() throws {
        var rng = SeededRandom(seed: 44)
        let bad: [(Conv2d, String)] = [
            (try Conv2d(weight: rng.tensor([8, 8, 3, 3]), bias: nil, stride: 2, padding: 1), "stride 2"),
            (try Conv2d(weight: rng.tensor([8, 8, 1, 1]), bias: nil), "1x1"),
            (try Conv2d(weight: rng.tensor([8, 3, 3, 3]), bias: nil, padding: 1), "3 input channels"),
            (try Conv2d(weight: rng.tensor([12, 8, 3, 3]), bias: nil, padding: 1), "12 output channels"),
            (try Conv2d(weight: rng.tensor([8, 8, 3, 3]), bias: nil, padding: 3), "padding 3"),
        ]
        for (conv, what) in bad {
            XCTAssertFalse(WinogradConvolution.supports(conv), what)
            XCTAssertThrowsError(try WinogradConvolution(conv, height: 8, width: 8, relu: false, srcLayout: .nhwc, dstLayout: .nhwc), what) {
                XCTAssertTrue("\($0)".contains("Winograd"), "\(what): \($0)")
            }
        }
        let ok = try Conv2d(weight: rng.tensor([16, 16, 3, 3]), bias: nil, padding: 1)
        XCTAssertNoThrow(try WinogradConvolution(ok, height: 8, width: 8, relu: false, srcLayout: .nChw16c, dstLayout: .nChw16c))
        XCTAssertThrowsError(try WinogradConvolution(ok, height: 8, width: 8, relu: false, srcLayout: .nhwc, dstLayout: .nhwc, tile: 3)) {
            XCTAssertTrue("\($0)".contains("4x4 or 2x2"), "\($0)")
        }
        let odd = try Conv2d(weight: rng.tensor([24, 16, 3, 3]), bias: nil, padding: 1)
        XCTAssertThrowsError(try WinogradConvolution(odd, height: 8, width: 8, relu: false, srcLayout: .nhwc, dstLayout: .nChw16c))
        // In a network: the stride-2 stem convolution on 3 channels is direct, and still right.
        let stem = try Conv2d(weight: rng.tensor([8, 3, 3, 3], scale: 0.3), bias: rng.tensor([8]), stride: 2, padding: 1)
        let x = rng.tensor([3, 9, 9])
        let b = try ConvolutionNetwork.Builder(channels: 3, height: 9, width: 9, policy: .lightcapWinograd)
        let net = try b.build(output: try b.convolution(b.input, stem, relu: true))
        XCTAssertFalse(net.implementations.contains { $0.implementation.hasPrefix("lightcap_wino") })
        assertClose(try net(x), Reference.tokens(Reference.relu(Reference.conv2d(x, weight: stem.weight, bias: stem.bias, stride: 2, padding: 1))),
                    tolerance: 1e-5, minimumScale: 1e-6, "stem")
    }
}
