import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// LightCap's direct convolution for small outputs (`DirectConvolution`, the kernel in
/// CKernels) against the plain `Reference` convolution: every channel layout it reads and
/// writes, pixel blocks of every size from 1 to 6 (49 pixels: blocks of 6 and 5), kernels 1 to
/// 7, strides 1 and 2, padding 0 to 3, more input channels than one chunk (256), with and
/// without bias and ReLU, outputs up to 28x28; on two threads; and in a network, where it
/// replaces oneDNN's kernel.
///
/// Tolerance: 1e-5 of the output's scale (a direct convolution in float, summed in another
/// order than the reference's); a wrong tap, pixel, block, chunk or layout gives errors of
/// order 1.
final class DirectConvolutionTests: XCTestCase {
    /// Runs `d` on the CHW tensor `x` (and the CHW `residual` for a `d` that adds one): reorders
    /// them into d's layouts, runs, reorders the result back to CHW.
    func run(_ d: DirectConvolution, _ x: Tensor, residual: Tensor? = nil, threads: Int = 1) throws -> Tensor {
        let src = try d.srcLayout.buffer(holding: x)
        let outShape = [d.outChannels, d.outHeight, d.outWidth]
        XCTAssertEqual(d.residual, residual != nil)
        let dst = try residual.map(d.dstLayout.buffer(holding:)) ?? DNNL.Buffer(bytes: outShape.reduce(1, *) * 4)
        let scratch = DNNL.Buffer(bytes: d.scratchCount * 4)
        Threads.with(threads) {
            d.run(src: src.pointer.assumingMemoryBound(to: Float.self), dst: dst.pointer.assumingMemoryBound(to: Float.self),
                  scratch: scratch.pointer.assumingMemoryBound(to: Float.self), threads: threads)
        }
        return try d.dstLayout.tensor(outShape, from: dst)
    }

    func testMatchesReferenceInEveryLayout() throws {
        var rng = SeededRandom(seed: 51)
        // (in, out, height, width, kernel, stride, padding, bias, relu); pixels = output h x w
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Bool, Bool)] = [
            (16, 32, 7, 7, 3, 1, 1, true, true),     // RN50's last stage: 49 pixels, blocks of 6 and 5
            (24, 128, 14, 14, 3, 1, 1, true, false), // 196 pixels: 31 blocks of 6, 2 of 5
            (16, 128, 28, 28, 3, 1, 1, true, true),  // 784 pixels: 129 blocks of 6, 2 of 5
            (24, 16, 5, 9, 3, 1, 1, true, false),    // 45 pixels: 8 blocks, crossing row ends
            (8, 16, 1, 1, 3, 1, 1, false, true),     // 1 pixel: a block of 1
            (16, 48, 2, 2, 3, 1, 1, true, false),    // 4 pixels: a block of 4
            (8, 16, 3, 3, 3, 1, 1, true, true),      // 9 pixels: blocks of 5 and 4
            (16, 16, 4, 2, 3, 1, 1, false, false),   // 8 pixels: blocks of 4 and 4
            (8, 16, 2, 1, 3, 1, 1, true, false),     // 2 pixels: a block of 2
            (8, 16, 3, 1, 3, 1, 1, true, true),      // 3 pixels: a block of 3
            (16, 32, 9, 7, 1, 1, 0, true, true),     // 1x1
            (16, 16, 11, 10, 5, 2, 2, true, false),  // 5x5, stride 2
            (8, 16, 8, 8, 7, 1, 3, false, true),     // 7x7, padding 3
            (16, 16, 6, 6, 3, 1, 0, true, false),    // no padding: 4x4 out
            (8, 32, 4, 5, 3, 1, 2, true, true),      // padding 2: larger output than input
            (264, 32, 7, 7, 3, 1, 1, true, true),    // two chunks of input channels (256 + 8)
            (520, 16, 3, 3, 3, 1, 1, true, false),   // three chunks
        ]
        for (cin, cout, h, w, k, stride, pad, hasBias, relu) in cases {
            let x = rng.tensor([cin, h, w])
            let weight = rng.tensor([cout, cin, k, k], scale: 0.3)
            let b = hasBias ? rng.tensor([cout], scale: 0.2) : nil
            let conv = try Conv2d(weight: weight, bias: b, stride: stride, padding: pad)
            var expected = Reference.conv2d(x, weight: weight, bias: b, stride: stride, padding: pad)
            if relu { expected = Reference.relu(expected) }
            for src in ChannelLayout.allCases where src.fits(cin) {
                for dst in ChannelLayout.allCases where dst.fits(cout) {
                    let d = try DirectConvolution(conv, height: h, width: w, relu: relu, srcLayout: src, dstLayout: dst)
                    XCTAssertEqual([d.outHeight, d.outWidth], [conv.outputSize(h), conv.outputSize(w)])
                    assertClose(try run(d, x), expected, tolerance: 1e-5, minimumScale: 1e-6,
                                "\(cin)->\(cout) \(h)x\(w) k\(k) s\(stride) p\(pad) \(src)->\(dst) on \(LightCapKernels.isa)")
                }
            }
        }
    }

    /// With a residual already in the destination (how a network adds a bottleneck's shortcut):
    /// dst = ReLU(conv + bias + residual), in every layout, over one and two channel chunks.
    func testAddsTheResidualInTheDestination() throws {
        var rng = SeededRandom(seed: 55)
        for (cin, cout, side, k) in [(32, 64, 7, 1), (264, 16, 7, 1), (16, 32, 5, 3)] {
            let x = rng.tensor([cin, side, side])
            let conv = try Conv2d(weight: rng.tensor([cout, cin, k, k], scale: 0.3), bias: rng.tensor([cout], scale: 0.2),
                                  padding: k / 2)
            let residual = rng.tensor([cout, side, side])
            let expected = Reference.relu(Reference.add(
                Reference.conv2d(x, weight: conv.weight, bias: conv.bias, stride: 1, padding: k / 2), residual))
            for src in ChannelLayout.allCases where src.fits(cin) {
                for dst in ChannelLayout.allCases where dst.fits(cout) {
                    let d = try DirectConvolution(conv, height: side, width: side, relu: true, residual: true,
                                                  srcLayout: src, dstLayout: dst)
                    assertClose(try run(d, x, residual: residual), expected, tolerance: 1e-5, minimumScale: 1e-6,
                                "\(cin)->\(cout) \(side)x\(side) k\(k) \(src)->\(dst) with a residual")
                }
            }
        }
    }

    /// The output channels split over two threads (of oneDNN's OpenMP team): each output is
    /// summed by one thread in the same order, so the result is the same to the bit.
    func testTwoThreadsGiveTheSameResult() throws {
        XCTAssertTrue(LightCapKernels.threadsFromOpenMP, "libgomp's GOMP_parallel not found beside oneDNN")
        var rng = SeededRandom(seed: 52)
        let x = rng.tensor([264, 7, 7])
        let conv = try Conv2d(weight: rng.tensor([80, 264, 3, 3], scale: 0.1), bias: rng.tensor([80]), padding: 1)
        let d = try DirectConvolution(conv, height: 7, width: 7, relu: true, srcLayout: .nChw8c, dstLayout: .nChw8c)
        let one = try run(d, x), two = try run(d, x, threads: 2)
        XCTAssertEqual(one.scalars, two.scalars, "2 threads vs 1")
        // The weights packed on two threads: the same layout.
        let packedOnTwo = try DirectConvolution(conv, height: 7, width: 7, relu: true, srcLayout: .nChw8c, dstLayout: .nChw8c,
                                                threads: 2)
        XCTAssertEqual(try run(packedOnTwo, x).scalars, one.scalars, "weights packed on 2 threads")
        assertClose(one, Reference.relu(Reference.conv2d(x, weight: conv.weight, bias: conv.bias, stride: 1, padding: 1)),
                    tolerance: 1e-5, minimumScale: 1e-6, "against the reference")
    }

    /// In a network (`.exact`), where oneDNN's kernels are its AVX2 ones (jit:avx2,
    /// jit_1x1:avx2): the 3x3 layers with >= 128 output channels at any side and the 1x1 layers
    /// at output side <= 7 (one adding a residual) are LightCap's; 3x3 layers with fewer output
    /// channels and 1x1 layers at larger sides oneDNN's, and every layer under `.oneDNN`.
    /// The results agree with the reference either way, on one and two threads, also when the
    /// first op reads the network's input.
    func testNetworkTakesItWhereItIsFaster() throws {
        var rng = SeededRandom(seed: 53)
        func ref(_ t: Tensor, _ k: Conv2d) -> Tensor { Reference.conv2d(t, weight: k.weight, bias: k.bias, stride: k.stride, padding: k.padding) }
        for side in [7, 14] {
            let x = rng.tensor([32, side, side])
            let first = try Conv2d(weight: rng.tensor([128, 32, 3, 3], scale: 0.1), bias: rng.tensor([128], scale: 0.1), padding: 1)
            let reduce = try Conv2d(weight: rng.tensor([32, 128, 1, 1], scale: 0.2), bias: nil)
            let second = try Conv2d(weight: rng.tensor([64, 32, 3, 3], scale: 0.1), bias: nil, padding: 1)
            let expand = try Conv2d(weight: rng.tensor([128, 64, 1, 1], scale: 0.2), bias: rng.tensor([128], scale: 0.1))
            let h1 = Reference.relu(ref(x, first))
            let expected = Reference.tokens(Reference.relu(Reference.add(ref(ref(Reference.relu(ref(h1, reduce)), second), expand), h1)))
            // Which layers are LightCap's on an AVX2 CPU: first (3x3, 128 out), reduce and expand
            // (1x1) at side 7 only, never second (3x3, 64 out).
            let mineOnAVX2 = [true, side <= 7, false, side <= 7]
            for threads in [1, 2] {
                var outputs: [ConvolutionPolicy: Tensor] = [:]
                var oneDNNKernels: [String] = []
                for policy in [ConvolutionPolicy.oneDNN, .exact] {
                    let b = try ConvolutionNetwork.Builder(channels: 32, height: side, width: side, policy: policy, threads: threads)
                    let h1 = try b.convolution(b.input, first, relu: true, label: "first")
                    let h2 = try b.convolution(try b.convolution(h1, reduce, relu: true, label: "reduce"), second, relu: false, label: "second")
                    let net = try b.build(output: try b.convolution(h2, expand, relu: true, residual: h1, label: "expand"))
                    let kinds = net.implementations.filter { ["first", "reduce", "second", "expand"].contains($0.label) }.map(\.implementation)
                    XCTAssertEqual(kinds.count, 4)
                    if policy == .oneDNN {
                        XCTAssertFalse(kinds.contains { $0.hasPrefix("lightcap") }, "\(kinds)")
                        oneDNNKernels = kinds
                    } else {
                        for (i, (kind, (conv, oneDNN))) in zip(kinds, zip([first, reduce, second, expand], oneDNNKernels)).enumerated() {
                            let output = ConvolutionNetwork.Shape(channels: conv.outChannels, height: side, width: side)
                            let mine = KernelChoice.lightcapDirectIsFaster(conv, output: output, oneDNN: oneDNN)
                            XCTAssertEqual(mine, LightCapKernels.isa == "avx2+fma" && oneDNN.hasSuffix(":avx2") && mineOnAVX2[i],
                                           "side \(side), layer \(i): \(oneDNN)")
                            // Otherwise oneDNN's own kernel, whatever it is called on this CPU
                            // ("jit:avx2", "brgconv:avx512_core", ...).
                            XCTAssertTrue(mine ? kind.hasPrefix("lightcap_direct") : kind == oneDNN, "\(kinds)")
                        }
                    }
                    let ws = try net.makeWorkspace()
                    let y = try net(x, workspace: ws)
                    assertClose(y, expected, tolerance: 1e-5, minimumScale: 1e-6, "side \(side), \(policy), \(threads) thread(s)")
                    assertClose(try net(x, workspace: ws), y, tolerance: 0, minimumScale: 1e-6, "\(policy) rerun")
                    outputs[policy] = y
                }
                assertClose(outputs[.exact]!, outputs[.oneDNN]!, tolerance: 1e-5, minimumScale: 1e-6,
                            "side \(side): exact vs onednn, \(threads) thread(s)")
            }
        }
    }

    /// Convolutions the kernel can't compute are errors that say why; a network takes oneDNN's
    /// kernel for them.
    func testUnsupportedConvolutionsAreErrorsOrOneDNN() throws {
        var rng = SeededRandom(seed: 54)
        let bad: [(Conv2d, String)] = [
            (try Conv2d(weight: rng.tensor([16, 3, 3, 3]), bias: nil, padding: 1), "3 input channels"),
            (try Conv2d(weight: rng.tensor([24, 8, 3, 3]), bias: nil, padding: 1), "24 output channels"),
            (try Conv2d(weight: rng.tensor([16, 8, 9, 9]), bias: nil, padding: 4), "9x9 kernel"),
        ]
        for (conv, what) in bad {
            XCTAssertFalse(DirectConvolution.supports(conv), what)
            XCTAssertThrowsError(try DirectConvolution(conv, height: 8, width: 8, relu: false, srcLayout: .nhwc, dstLayout: .nhwc), what) {
                XCTAssertTrue("\($0)".contains("direct kernel"), "\(what): \($0)")
            }
        }
        let narrow = try Conv2d(weight: rng.tensor([16, 8, 3, 3]), bias: nil, padding: 1)
        XCTAssertThrowsError(try DirectConvolution(narrow, height: 8, width: 8, relu: false, srcLayout: .nChw16c, dstLayout: .nhwc)) {
            XCTAssertTrue("\($0)".contains("do not fit"), "\($0)")
        }
        let unpadded = try Conv2d(weight: rng.tensor([16, 8, 3, 3]), bias: nil, padding: 0)
        XCTAssertThrowsError(try DirectConvolution(unpadded, height: 2, width: 2, relu: false, srcLayout: .nhwc, dstLayout: .nhwc)) {
            XCTAssertTrue("\($0)".contains("too small"), "\($0)")
        }
        // In a network: 3 input channels, an output side of 8, a residual: oneDNN's kernels.
        let x = rng.tensor([3, 8, 8])
        let stem = try Conv2d(weight: rng.tensor([16, 3, 3, 3], scale: 0.3), bias: rng.tensor([16]), padding: 1)
        let body = try Conv2d(weight: rng.tensor([16, 16, 3, 3], scale: 0.1), bias: nil, padding: 1)
        let b = try ConvolutionNetwork.Builder(channels: 3, height: 8, width: 8, policy: .exact)
        let h = try b.convolution(b.input, stem, relu: true)
        let net = try b.build(output: try b.convolution(h, body, relu: true, residual: h))
        XCTAssertFalse(net.implementations.contains { $0.implementation.hasPrefix("lightcap") }, "\(net.implementations)")
        let rh = Reference.relu(Reference.conv2d(x, weight: stem.weight, bias: stem.bias, stride: 1, padding: 1))
        let expected = Reference.relu(Reference.add(Reference.conv2d(rh, weight: body.weight, bias: nil, stride: 1, padding: 1), rh))
        assertClose(try net(x), Reference.tokens(expected), tolerance: 1e-5, minimumScale: 1e-6, "oneDNN's kernels")
    }
}
