import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// INT8 convolutions (`QuantizedConv2d` through oneDNN's u8 x s8 kernels) against their plain
/// twin: the input quantized as oneDNN's reorder does (x * (1 / s_x), nearest even, saturated to
/// 0...255), weights dequantized, then `Reference.conv2d` in Double. The integer products are
/// exact, so only F32 rounding separates them.
final class QuantizedConvolutionTests: XCTestCase {
    /// The twin: the u8 levels of `x` at `scale`, times `scale`.
    static func quantizedInput(_ x: Tensor, scale: Float) -> Tensor {
        let inverse = 1 / scale
        return Tensor(shape: x.shape, scalars: x.scalars.map { min(255, max(0, ($0 * inverse).rounded(.toNearestOrEven))) * scale })
    }

    /// The twin: each output channel's levels times its scale.
    static func dequantizedWeight(_ q: QuantizedConv2d) -> Tensor {
        let per = q.weight.count / q.outChannels
        return Tensor(shape: q.shape, generator: { Float(q.weight[$0]) * q.weightScales[$0 / per] })
    }

    func testSingleConvolutionsMatchTheirTwin() throws {
        var rng = SeededRandom(seed: 81)
        // (in, out, side, kernel, stride, padding, relu, residual, calibrated share of the true max)
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, Bool, Float)] = [
            (16, 32, 12, 3, 1, 1, true, false, 1),     // 3x3, blocked channel counts
            (32, 64, 7, 1, 1, 0, true, true, 1),       // 1x1 + residual (a bottleneck's conv3)
            (17, 33, 9, 3, 2, 1, false, false, 1),     // odd channels, stride 2, no ReLU
            (24, 40, 8, 1, 1, 0, false, true, 0.6),    // inputs over the calibrated max saturate at 255
            (3, 8, 13, 3, 2, 1, true, true, 1),
        ]
        for (cin, cout, side, k, stride, pad, relu, withResidual, share) in cases {
            // Signed input: its negative values saturate at level 0.
            let x = rng.tensor([cin, side, side])
            let conv = try Conv2d(weight: rng.tensor([cout, cin, k, k], scale: 0.5), bias: rng.tensor([cout], scale: 0.3),
                                  stride: stride, padding: pad)
            let q = try QuantizedConv2d(conv, inputMax: x.maxAbs * share)
            let b = try ConvolutionNetwork.Builder(channels: cin, height: side, width: side)
            let outSide = conv.outputSize(side)
            // The residual: an F32 convolution of the input to the output's shape.
            let r = try Conv2d(weight: rng.tensor([cout, cin, 1, 1], scale: 0.5), bias: nil, stride: stride, padding: 0)
            XCTAssertEqual(r.outputSize(side), outSide)
            let residual = withResidual ? try b.convolution(b.input, r, relu: false) : nil
            let y = try b.convolution(b.input, q, relu: relu, residual: residual, label: "int8")
            let net = try b.build(output: y)

            var expected = Reference.conv2d(Self.quantizedInput(x, scale: q.inputScale), weight: Self.dequantizedWeight(try q.forKernels()),
                                            bias: conv.bias, stride: stride, padding: pad)
            if withResidual {
                let added = Reference.conv2d(x, weight: r.weight, bias: nil, stride: stride, padding: 0)
                expected = Tensor(shape: expected.shape, scalars: zip(expected.scalars, added.scalars).map { $0 + $1 })
            }
            if relu { expected = Reference.relu(expected) }
            let what = "int8 conv \(cin)->\(cout) k\(k) s\(stride) relu \(relu) residual \(withResidual) share \(share)"
            assertClose(try net(x), Reference.tokens(expected), tolerance: 1e-5, minimumScale: 1e-3, what)
            XCTAssertTrue(net.implementations.contains { $0.label == "int8" && !$0.implementation.hasPrefix("ref") },
                          "\(what): \(net.implementations)")
            XCTAssertTrue(net.implementations.contains { $0.label == "int8.quantize" }, what)
        }
    }

    /// The rounding rule: each output channel's largest weight maps to +-127; inputs to 255 levels.
    func testQuantizationFollowsTheRowRule() throws {
        var rng = SeededRandom(seed: 82)
        let conv = try Conv2d(weight: rng.tensor([6, 5, 3, 3]), bias: nil, stride: 1, padding: 1)
        let q = try QuantizedConv2d(conv, inputMax: 5.1)
        XCTAssertEqual(q.inputScale, 5.1 / 255)
        let per = 5 * 9
        for o in 0..<6 {
            let row = conv.weight.scalars[(o * per)..<((o + 1) * per)]
            let largest = row.map(abs).max()!
            XCTAssertEqual(q.weightScales[o], largest / 127)
            XCTAssertEqual(q.weight[(o * per)..<((o + 1) * per)].map { abs(Int($0)) }.max(), 127)
            for (i, w) in row.enumerated() {
                XCTAssertLessThanOrEqual(abs(Float(q.weight[o * per + i]) * q.weightScales[o] - w), q.weightScales[o] / 2 * 1.0001)
            }
        }
        // Without VNNI: 63 levels, each q' = round(q / 2) at twice the scale.
        let halved = try q.forKernels(weightLevels: 63)
        XCTAssertEqual(halved.weightScales, q.weightScales.map { $0 * 2 })
        XCTAssertEqual(halved.weight.map { abs(Int($0)) }.max(), 63)
        XCTAssertTrue(zip(q.weight, halved.weight).allSatisfy { abs(Float($0) / 2 - Float($1)) <= 0.5 })
        XCTAssertEqual(try q.forKernels(weightLevels: 127).weight, q.weight)
        // Nothing to calibrate on (an input that is never positive): scale 1, not a division by zero.
        XCTAssertEqual(try QuantizedConv2d(conv, inputMax: 0).inputScale, 1)
    }

    func testBadPartsAreNamedErrors() throws {
        let shape = [2, 1, 1, 1]
        func make(scales: [Float] = [1, 1], input: Float = 1, count: Int = 2) throws -> QuantizedConv2d {
            try QuantizedConv2d(weight: [Int8](repeating: 1, count: count), shape: shape, weightScales: scales, bias: nil,
                                inputScale: input, stride: 1, padding: 0)
        }
        XCTAssertNoThrow(try make())
        // A scale that doubling overflows (the 63-level weights of hosts without VNNI): an error, not a trap.
        XCTAssertThrowsError(try make(scales: [1, .greatestFiniteMagnitude]).forKernels(weightLevels: 63)) {
            XCTAssertTrue("\($0)".contains("weight scale 1"), "\($0)")
        }
        for (bad, words) in [({ try make(scales: [1, 0]) }, "weight scale 1"), ({ try make(scales: [1]) }, "1 weight scales"),
                             ({ try make(input: .nan) }, "input scale"), ({ try make(input: -1) }, "input scale"),
                             ({ try make(count: 3) }, "[2, 1, 1, 1]")] as [(() throws -> QuantizedConv2d, String)] {
            XCTAssertThrowsError(try bad()) { XCTAssertTrue("\($0)".contains(words), "\($0)") }
        }
    }
}
