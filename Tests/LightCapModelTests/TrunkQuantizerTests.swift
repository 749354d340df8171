import XCTest
import Foundation
@testable import LightCapCore
@testable import LightCapModel
import LightCapReference
import LightCapTestSupport

/// `TrunkQuantizer` (lightcap quantize) and the INT8 trunk it writes: calibration against the
/// plain twin, the INT8 trunk near the F32 one, strict loading, nothing overwritten.
final class TrunkQuantizerTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-quantize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A 64 px trunk of width 8 (two blocks in layer2: the in-place residual path), no concepts
    /// (nor the modulator, which needs them).
    func config(folded: Bool) -> Configuration {
        var c = Configuration()
        c.image.size = 64
        c.visual.width = 8
        c.visual.layers = [1, 2, 1, 1]
        c.visual.batchnormFolded = folded
        c.concepts.enabled = false
        c.modulator.enabled = false
        return c
    }

    /// A model directory holding random visual weights (the trunk is all a quantizer reads).
    func modelDirectory(_ name: String, _ config: Configuration, seed: UInt64) throws -> (ModelDirectory, [String: Tensor]) {
        let url = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let weights = randomVisualWeights(config, seed: seed)
        try SafetensorsWriter.write(weights.mapValues { .f32($0) }, to: url.appendingPathComponent("model.safetensors"))
        try JSONEncoder().encode(config).write(to: url.appendingPathComponent("config.json"))
        try "[PAD]\n".write(to: url.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        return (try ModelDirectory(url: url), weights)
    }

    func images(_ count: Int, side: Int, seed: UInt64) -> [[Float]] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in (0..<(3 * side * side)).map { _ in rng.uniform(2) } }
    }

    func testCalibrationAndTheInt8TrunkAgainstF32() throws {
        for folded in [true, false] {
            let (model, weights) = try modelDirectory("f32-\(folded)", config(folded: folded), seed: 61)
            let trunk = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
            let calibration = images(3, side: 64, seed: 62)
            let inputs = try TrunkQuantizer.calibrate(trunk, images: calibration)
            let layout = CLIPResNetLayout(model.configuration.visual)
            XCTAssertEqual(Set(inputs.keys), Set(layout.convolutions.map(\.name)))
            XCTAssertTrue(inputs.values.allSatisfy { $0.largest > 0 && $0.clip > 0 && $0.clip <= $0.largest })
            // The stem's second convolution reads ReLU(conv1(pixels)): its largest value, by the twin.
            let conv1 = try ConvLoader(store: WeightStore(file: try model.openWeights()).scoped("visual"), folded: folded)
                .conv(layout.stem[0])
            let expected = calibration.map { pixels in
                Reference.relu(Reference.conv2d(Tensor(shape: [3, 64, 64], scalars: pixels), weight: conv1.weight,
                                                bias: conv1.bias, stride: 2, padding: 1)).scalars.max()!
            }.max()!
            XCTAssertEqual(inputs["conv2"]!.largest, expected, accuracy: 1e-5 * expected, "folded \(folded)")

            let out = dir.appendingPathComponent("int8-\(folded)")
            let keep = folded ? [] : ["layer4", "layer2.1", "layer1.0.conv3"]
            try TrunkQuantizer.write(model, inputs: inputs, keepF32: keep, to: out)
            let quantized = try ModelDirectory(url: out)
            XCTAssertEqual(quantized.configuration.visual.quantization, "int8")
            XCTAssertTrue(quantized.configuration.visual.batchnormFolded)
            let store = try quantized.weightStore()
            let int8 = try CLIPResNet(store, configuration: quantized.configuration)
            try store.finish()  // every tensor written is read: no BatchNorm left, nothing extra
            let labels = Set(int8.network.implementations.map(\.label))
            for c in layout.convolutions {
                let kept = c.name.hasPrefix("layer4.") || c.name.hasPrefix("layer2.1.") || c.name == "layer1.0.conv3"
                let int8Layer = c.quantizable && !(keep.count > 0 && kept)
                XCTAssertEqual(labels.contains("\(c.name).quantize"), int8Layer, c.name)
                XCTAssertEqual(try store.file.entry(named: "visual.\(c.name).weight").dtype, int8Layer ? .i8 : .f32, c.name)
                if int8Layer {
                    XCTAssertEqual(try store.file.entry(named: "visual.\(c.name).weight").dtype, .i8)
                    XCTAssertEqual(try store.file.tensor(named: "visual.\(c.name).input_scale").scalars, [inputs[c.name]!.clip / 255])
                }
            }
            // The INT8 grid is near the F32 one: a few per cent of its scale after 17 rounded layers.
            let reference = try CLIPResNetReference(try WeightStore(file: try model.openWeights()), configuration: model.configuration)
            for (i, pixels) in images(2, side: 64, seed: 63).enumerated() {
                let x = Tensor(shape: [3, 64, 64], scalars: pixels)
                let f32 = reference.grid(x), q = try int8.grid(x)
                let relative = q.maxAbsDifference(f32) / f32.maxAbs
                XCTAssertLessThan(relative, 0.05, "image \(i) folded \(folded)")
                XCTAssertGreaterThan(relative, 1e-5, "image \(i): INT8 should round")
            }
            _ = weights
        }
    }

    /// The clipping point against its definition, evaluated directly for every candidate.
    func testClipMinimisesTheExpectedError() throws {
        func error(_ h: [Double], _ largest: Double, _ c: Double) -> Double {
            let width = largest / Double(h.count)
            return h.indices.reduce(0.0) { sum, k in
                let x = (Double(k) + 0.5) * width
                return sum + h[k] * (x <= c ? (c / 255) * (c / 255) / 12 : (x - c) * (x - c))
            }
        }
        var rng = SeededRandom(seed: 68)
        let bins = TrunkQuantizer.bins
        // Flat values: nothing to gain by clipping. A long tail with a far outlier: clip well below it.
        let flat = [Double](repeating: 10, count: bins)
        XCTAssertGreaterThan(TrunkQuantizer.clip(histogram: flat, largest: 4), 3.95)
        var tail = (0..<bins).map { k in (1e5 * exp(-Double(k) / 40)).rounded() }
        tail[bins - 1] = 1
        let c = TrunkQuantizer.clip(histogram: tail, largest: 8)
        XCTAssertLessThan(c, 2)
        for h in [tail, (0..<bins).map { _ in Double(rng.uniform(1) > 0.3 ? 0 : Int(rng.nextUniform() * 100)) }] {
            let chosen = Double(TrunkQuantizer.clip(histogram: h, largest: 8))
            let best = (bins / 16 - 1..<bins).map { Double($0 + 1) * 8 / Double(bins) }.min { error(h, 8, $0) < error(h, 8, $1) }!
            XCTAssertEqual(error(h, 8, chosen), error(h, 8, best), accuracy: 1e-9 * error(h, 8, best))
        }
    }

    func testStrictLoadingNamesTheTensor() throws {
        let (model, _) = try modelDirectory("f32", config(folded: true), seed: 64)
        let trunk = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
        let inputs = try TrunkQuantizer.calibrate(trunk, images: images(1, side: 64, seed: 65))
        let out = dir.appendingPathComponent("int8")
        try TrunkQuantizer.write(model, inputs: inputs, to: out)
        let quantized = try ModelDirectory(url: out)
        let file = try quantized.openWeights()
        var tensors: [String: SafetensorsWriter.Value] = [:]
        for name in file.names {
            let e = try file.entry(named: name)
            tensors[name] = e.dtype == .i8 ? .i8(try file.int8s(named: name), shape: e.shape) : .f32(try file.tensor(named: name))
        }
        func load(_ change: (inout [String: SafetensorsWriter.Value]) -> Void) -> String {
            var t = tensors
            change(&t)
            let url = dir.appendingPathComponent("\(UUID().uuidString).safetensors")
            do {
                try SafetensorsWriter.write(t, to: url)
                _ = try CLIPResNet(WeightStore(file: try SafetensorsFile(url: url)), configuration: quantized.configuration)
                return "loaded"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(load { _ in }, "loaded")
        let key = "visual.layer1.0.conv2"
        // Without its input_scale a convolution is an F32 one, whose I8 weight is then the wrong dtype.
        XCTAssertTrue(load { $0["\(key).input_scale"] = nil }.contains("\(key).weight"))
        XCTAssertTrue(load { $0["\(key).weight"] = .f32(Tensor(zeros: [8, 8, 3, 3])) }.contains("\(key).weight"))
        XCTAssertTrue(load { $0["\(key).input_scale"] = .f32(Tensor(shape: [1], scalars: [0])) }.contains(key))
        XCTAssertTrue(load { $0["\(key).weight_scale"] = .f32(Tensor(shape: [3], scalars: [1, 1, 1])) }.contains("\(key).weight_scale"))

        // An INT8 trunk needs folded BatchNorm; "int8" and "none" are the only values.
        var bad = quantized.configuration
        bad.visual.batchnormFolded = false
        XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("batchnorm_folded"), "\($0)") }
        bad = quantized.configuration
        bad.visual.quantization = "int4"
        XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("visual.quantization"), "\($0)") }
    }

    /// The default F32 convolutions: what the last stage adds into the grid.
    func testDefaultKeepsTheConvolutionsThatWriteTheGrid() throws {
        var visual = Configuration.Visual()
        visual.layers = [3, 4, 6, 3]
        XCTAssertEqual(TrunkQuantizer.defaultKeepF32(CLIPResNetLayout(visual)),
                       ["layer4.0.conv3", "layer4.0.downsample.0", "layer4.1.conv3", "layer4.2.conv3"])
        let stream = TrunkQuantizer.residualStream(CLIPResNetLayout(visual))
        XCTAssertEqual(stream.count, 16 + 4)
        XCTAssertEqual(Array(stream.prefix(4)), ["layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"])
    }

    func testNothingIsOverwrittenOrQuantizedTwice() throws {
        let (model, _) = try modelDirectory("f32", config(folded: true), seed: 66)
        let trunk = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
        let inputs = try TrunkQuantizer.calibrate(trunk, images: images(1, side: 64, seed: 67))
        let out = dir.appendingPathComponent("int8")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try "mine".write(to: out.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrunkQuantizer.write(model, inputs: inputs, to: out)) { XCTAssertTrue("\($0)".contains("exists"), "\($0)") }
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("notes.txt"), encoding: .utf8), "mine")
        try FileManager.default.removeItem(at: out)
        try TrunkQuantizer.write(model, inputs: inputs, to: out)
        XCTAssertThrowsError(try TrunkQuantizer.write(try ModelDirectory(url: out), inputs: inputs,
                                                      to: dir.appendingPathComponent("again"))) {
            XCTAssertTrue("\($0)".contains("already int8"), "\($0)")
        }
        XCTAssertThrowsError(try TrunkQuantizer.write(model, inputs: inputs, keepF32: ["layer9"], to: dir.appendingPathComponent("bad"))) {
            XCTAssertTrue("\($0)".contains("\"layer9\""), "\($0)")
        }
        // "layer1.0.conv" names no convolution: prefixes are whole name components.
        XCTAssertThrowsError(try TrunkQuantizer.write(model, inputs: inputs, keepF32: ["layer1.0.conv"], to: dir.appendingPathComponent("bad")))
        XCTAssertThrowsError(try TrunkQuantizer.calibrate(trunk, images: [])) { XCTAssertTrue("\($0)".contains("at least one"), "\($0)") }
        XCTAssertThrowsError(try TrunkQuantizer.calibrate(trunk, images: [[1, 2, 3]])) { XCTAssertTrue("\($0)".contains("3x64x64"), "\($0)") }
        // No staging directory is left beside the output.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }, [])
        // "residual" keeps every conv3 and downsample in F32.
        try TrunkQuantizer.write(model, inputs: inputs, keepF32: ["residual"], to: dir.appendingPathComponent("stream"))
        let stream = try ModelDirectory(url: dir.appendingPathComponent("stream")).openWeights()
        for c in CLIPResNetLayout(model.configuration.visual).convolutions where c.quantizable {
            let kept = c.name.hasPrefix("layer") && (c.name.hasSuffix(".conv3") || c.name.contains("downsample"))
            XCTAssertEqual(try stream.entry(named: "visual.\(c.name).weight").dtype, kept ? .f32 : .i8, c.name)
        }
    }
}
