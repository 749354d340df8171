import XCTest
@testable import LightCapCore
import LightCapReference
import LightCapTestSupport

/// Strict loading: scopes, shape checks, NaN/Inf rejection, unused and missing keys.
final class WeightStoreTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws { dir = try temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func store(_ tensors: [String: Tensor]) throws -> WeightStore {
        let url = dir.appendingPathComponent("\(UUID().uuidString).safetensors")
        try SafetensorsWriter.write(tensors.mapValues { .f32($0) }, to: url)
        return WeightStore(file: try SafetensorsFile(url: url))
    }

    func testScopedTakeAndFinish() throws {
        let s = try store(["bert.encoder.layer.0.weight": Tensor(zeros: [2, 3]), "bert.bias": Tensor(zeros: [2])])
        let layer = s.scoped("bert").scoped("encoder").scoped("layer").scoped(0)
        XCTAssertEqual(layer.fullKey("weight"), "bert.encoder.layer.0.weight")
        XCTAssertEqual(try layer.take("weight", shape: [2, 3]).shape, [2, 3])
        XCTAssertThrowsError(try s.finish()) { XCTAssertEqual($0 as? LightCapError, .unusedTensors(keys: ["bert.bias"])) }
        _ = try s.scoped("bert").take("bias", shape: [2])
        XCTAssertNoThrow(try s.finish())
    }

    func testMissingTensorNamesKey() throws {
        let s = try store(["a": Tensor(zeros: [1])])
        XCTAssertThrowsError(try s.scoped("visual").take("conv1.weight", shape: [1])) {
            XCTAssertEqual($0 as? LightCapError, .missingTensor(key: "visual.conv1.weight"))
            XCTAssertTrue("\($0)".contains("visual.conv1.weight"))
        }
    }

    func testShapeMismatchNamesKeyAndShapes() throws {
        let s = try store(["visual.conv1.weight": Tensor(zeros: [8, 3, 3, 3])])
        XCTAssertThrowsError(try s.scoped("visual").take("conv1.weight", shape: [16, 3, 3, 3])) {
            XCTAssertEqual($0 as? LightCapError, .shapeMismatch(key: "visual.conv1.weight", expected: [16, 3, 3, 3], actual: [8, 3, 3, 3]))
            XCTAssertTrue("\($0)".contains("[16, 3, 3, 3]") && "\($0)".contains("[8, 3, 3, 3]"))
        }
    }

    func testNaNAndInfinityRejected() throws {
        var bad = Tensor(zeros: [4])
        bad[flat: 2] = .nan
        var inf = Tensor(zeros: [3])
        inf[flat: 1] = -.infinity
        let s = try store(["w": bad, "v": inf])
        XCTAssertThrowsError(try s.take("w", shape: [4])) {
            guard case .nonFiniteWeights(key: "w", index: 2, _) = $0 as? LightCapError else { return XCTFail("\($0)") }
            XCTAssertTrue("\($0)".contains("'w'"))
        }
        XCTAssertThrowsError(try s.take("v")) {
            guard case .nonFiniteWeights(key: "v", index: 1, value: -.infinity) = $0 as? LightCapError else { return XCTFail("\($0)") }
        }
    }

    func testUnusedTensorsListed() throws {
        let s = try store(["a": Tensor(zeros: [1]), "extra.one": Tensor(zeros: [1]), "extra.two": Tensor(zeros: [1])])
        _ = try s.take("a")
        XCTAssertThrowsError(try s.finish()) {
            XCTAssertEqual($0 as? LightCapError, .unusedTensors(keys: ["extra.one", "extra.two"]))
            XCTAssertTrue("\($0)".contains("extra.one") && "\($0)".contains("extra.two"))
        }
        try s.skip("extra.one")
        try s.scoped("extra").skip("two")
        XCTAssertNoThrow(try s.finish())
    }

    func testLinearAndLayerNormLoadFromStore() throws {
        var rng = SeededRandom(seed: 21)
        let w = rng.tensor([4, 3]), b = rng.tensor([4]), g = rng.tensor([4]), beta = rng.tensor([4])
        let s = try store(["dense.weight": w, "dense.bias": b, "LayerNorm.weight": g, "LayerNorm.bias": beta])
        let linear = try Linear(s.scoped("dense"), inFeatures: 3, outFeatures: 4)
        let norm = try LayerNorm(s.scoped("LayerNorm"), size: 4, eps: 1e-12)
        try s.finish()
        let x = rng.tensor([2, 3])
        XCTAssertLessThan(linear(x).maxAbsDifference(Reference.linear(x, weight: w, bias: b)), 1e-5)
        XCTAssertFalse(linear.weight.isMapped)
        XCTAssertEqual(norm.size, 4)
        XCTAssertThrowsError(try Linear(s.scoped("dense"), inFeatures: 4, outFeatures: 4))
    }
}
