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
            let largest = try TrunkQuantizer.calibrate(trunk, images: calibration)
            let layout = CLIPResNetLayout(model.configuration.visual)
            XCTAssertEqual(Set(largest.keys), Set(layout.convolutions.map(\.name)))
            XCTAssertTrue(largest.values.allSatisfy { $0 > 0 })
            // The stem's second convolution reads ReLU(conv1(pixels)): its largest value, by the twin.
            let conv1 = try ConvLoader(store: WeightStore(file: try model.openWeights()).scoped("visual"), folded: folded)
                .conv(layout.stem[0])
            let expected = calibration.map { pixels in
                Reference.relu(Reference.conv2d(Tensor(shape: [3, 64, 64], scalars: pixels), weight: conv1.weight,
                                                bias: conv1.bias, stride: 2, padding: 1)).scalars.max()!
            }.max()!
            XCTAssertEqual(largest["conv2"]!, expected, accuracy: 1e-5 * expected, "folded \(folded)")

            let out = dir.appendingPathComponent("int8-\(folded)")
            try TrunkQuantizer.write(model, inputMax: largest, to: out)
            let quantized = try ModelDirectory(url: out)
            XCTAssertEqual(quantized.configuration.visual.quantization, "int8")
            XCTAssertTrue(quantized.configuration.visual.batchnormFolded)
            let store = try quantized.weightStore()
            let int8 = try CLIPResNet(store, configuration: quantized.configuration)
            try store.finish()  // every tensor written is read: no BatchNorm left, nothing extra
            let labels = Set(int8.network.implementations.map(\.label))
            for c in layout.convolutions {
                XCTAssertEqual(labels.contains("\(c.name).quantize"), c.quantizable, c.name)
                if c.quantizable {
                    XCTAssertEqual(try store.file.entry(named: "visual.\(c.name).weight").dtype, .i8)
                    XCTAssertEqual(try store.file.tensor(named: "visual.\(c.name).input_scale").scalars, [largest[c.name]! / 255])
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

    func testStrictLoadingNamesTheTensor() throws {
        let (model, _) = try modelDirectory("f32", config(folded: true), seed: 64)
        let trunk = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
        let largest = try TrunkQuantizer.calibrate(trunk, images: images(1, side: 64, seed: 65))
        let out = dir.appendingPathComponent("int8")
        try TrunkQuantizer.write(model, inputMax: largest, to: out)
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
        XCTAssertTrue(load { $0["\(key).input_scale"] = nil }.contains("\(key).input_scale"))
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

    func testNothingIsOverwrittenOrQuantizedTwice() throws {
        let (model, _) = try modelDirectory("f32", config(folded: true), seed: 66)
        let trunk = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
        let largest = try TrunkQuantizer.calibrate(trunk, images: images(1, side: 64, seed: 67))
        let out = dir.appendingPathComponent("int8")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try "mine".write(to: out.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrunkQuantizer.write(model, inputMax: largest, to: out)) { XCTAssertTrue("\($0)".contains("exists"), "\($0)") }
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("notes.txt"), encoding: .utf8), "mine")
        try FileManager.default.removeItem(at: out)
        try TrunkQuantizer.write(model, inputMax: largest, to: out)
        XCTAssertThrowsError(try TrunkQuantizer.write(try ModelDirectory(url: out), inputMax: largest,
                                                      to: dir.appendingPathComponent("again"))) {
            XCTAssertTrue("\($0)".contains("already int8"), "\($0)")
        }
        XCTAssertThrowsError(try TrunkQuantizer.calibrate(trunk, images: [])) { XCTAssertTrue("\($0)".contains("at least one"), "\($0)") }
        XCTAssertThrowsError(try TrunkQuantizer.calibrate(trunk, images: [[1, 2, 3]])) { XCTAssertTrue("\($0)".contains("3x64x64"), "\($0)") }
        // No staging directory is left beside the output.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }, [])
    }
}
