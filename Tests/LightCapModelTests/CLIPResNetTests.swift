import XCTest
import Foundation
@testable import LightCapCore
@testable import LightCapModel
import LightCapReference
import LightCapTestSupport

/// Random visual weights for `config` (folded or not, with the attention pool if configured),
/// keyed as docs/FORMAT.md says. SeededRandom, uniform with variance ~1/fan_in.
func randomVisualWeights(_ config: Configuration, seed: UInt64) -> [String: Tensor] {
    var random = SeededRandom(seed: seed)
    func uniform(_ shape: [Int], _ scale: Float, _ offset: Float = 0) -> Tensor {
        Tensor(shape: shape, generator: { _ in random.uniform() * scale + offset })
    }
    let v = config.visual
    var out: [String: Tensor] = [:]
    for c in CLIPResNetLayout(v).convolutions {
        let (o, i, k) = (c.outChannels, c.inChannels, c.kernel)
        out["visual.\(c.name).weight"] = uniform([o, i, k, k], (3 / Float(i * k * k)).squareRoot())
        if v.batchnormFolded {
            out["visual.\(c.name).bias"] = uniform([o], 0.1)
        } else {
            out["visual.\(c.batchNorm).weight"] = uniform([o], 0.5, 1)
            out["visual.\(c.batchNorm).bias"] = uniform([o], 0.1)
            out["visual.\(c.batchNorm).running_mean"] = uniform([o], 0.1)
            out["visual.\(c.batchNorm).running_var"] = uniform([o], 0.5, 1)
        }
    }
    if v.attentionPool {
        let c = config.gridChannels
        out["visual.attnpool.positional_embedding"] = uniform([config.visualTokens + 1, c], 0.1)
        for p in ["q_proj", "k_proj", "v_proj"] {
            out["visual.attnpool.\(p).weight"] = uniform([c, c], (3 / Float(c)).squareRoot())
            out["visual.attnpool.\(p).bias"] = uniform([c], 0.1)
        }
        out["visual.attnpool.c_proj.weight"] = uniform([v.outputDim, c], (3 / Float(c)).squareRoot())
        out["visual.attnpool.c_proj.bias"] = uniform([v.outputDim], 0.1)
    }
    return out
}

final class CLIPResNetTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-clip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A small config: 64x64 input, width 8, two blocks in layer2 (in-place residual path).
    func smallConfig(folded: Bool = true, attentionPool: Bool = false) -> Configuration {
        var c = Configuration()
        c.image.size = 64
        c.visual.width = 8
        c.visual.layers = [1, 2, 1, 1]
        c.visual.batchnormFolded = folded
        c.visual.attentionPool = attentionPool
        c.visual.heads = 4
        c.visual.outputDim = 24
        c.concepts.windows = [1, 2]
        return c
    }

    func store(_ tensors: [String: Tensor]) throws -> WeightStore {
        let url = dir.appendingPathComponent("\(UUID().uuidString).safetensors")
        try SafetensorsWriter.write(tensors.mapValues { .f32($0) }, to: url)
        return WeightStore(file: try SafetensorsFile(url: url))
    }

    func pixels(_ size: Int, seed: UInt64) -> Tensor {
        var s = seed
        return Tensor(shape: [3, size, size]) { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s) >> 40) / Float(1 << 23) * 2
        }
    }

    func assertClose(_ a: Tensor, _ b: Tensor, _ tolerance: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.shape, b.shape, what, file: file, line: line)
        let diff = a.maxAbsDifference(b), scale = b.maxAbs
        XCTAssertGreaterThan(scale, 0, what, file: file, line: line)
        XCTAssertLessThanOrEqual(diff, tolerance * scale, "\(what): max abs diff \(diff), scale \(scale)", file: file, line: line)
    }

    func testFoldedGridAndPoolMatchReference() throws {
        let config = smallConfig(attentionPool: true)
        let weights = randomVisualWeights(config, seed: 41)
        let s = try store(weights)
        let model = try CLIPResNet(s, configuration: config)
        try s.finish()
        let reference = try CLIPResNetReference(try store(weights), configuration: config)
        let x = pixels(64, seed: 1)
        let grid = try model.grid(x)
        XCTAssertEqual(grid.shape, [4, 256])
        let expected = reference.grid(x)
        assertClose(grid, expected, 2e-5, "grid")
        assertClose(try model.pooled(grid: grid), reference.pooled(expected)!, 2e-5, "pooled")
        // Pixels as an array and a reused workspace give the same grid.
        let ws = try model.makeWorkspace()
        XCTAssertEqual(try model.grid(pixels: x.scalars, workspace: ws).scalars, grid.scalars)
        XCTAssertEqual(try model.grid(pixels: x.scalars, workspace: ws).scalars, grid.scalars)
    }

    func testUnfoldedBatchNormIsFoldedAtLoad() throws {
        let config = smallConfig(folded: false)
        let weights = randomVisualWeights(config, seed: 42)
        let s = try store(weights)
        let model = try CLIPResNet(s, configuration: config)
        try s.finish()
        let reference = try CLIPResNetReference(try store(weights), configuration: config)
        let x = pixels(64, seed: 2)
        assertClose(try model.grid(x), reference.grid(x), 2e-5, "unfolded grid")
    }

    func testWinogradCloseToReference() throws {
        let config = smallConfig()
        let weights = randomVisualWeights(config, seed: 43)
        let reference = try CLIPResNetReference(try store(weights), configuration: config)
        let x = pixels(64, seed: 3)
        let expected = reference.grid(x)
        for policy in [ConvolutionPolicy.oneDNNWinograd, .oneDNNAuto, .lightcapWinograd] {
            let model = try CLIPResNet(try store(weights), configuration: config, policy: policy)
            assertClose(try model.grid(x), expected, 1e-3, "grid \(policy)")
        }
    }

    func testThreadsGiveSameGrid() throws {
        let config = smallConfig()
        let model = try CLIPResNet(try store(randomVisualWeights(config, seed: 44)), configuration: config)
        let x = pixels(64, seed: 4)
        Threads.set(1)
        let one = try model.grid(x)
        Threads.set(2)
        let two = try model.grid(x)
        Threads.set(1)
        assertClose(two, one, 1e-6, "1 vs 2 threads")
    }

    func testConcurrentCallersShareTheModel() throws {
        let config = smallConfig()
        let model = try CLIPResNet(try store(randomVisualWeights(config, seed: 45)), configuration: config)
        let inputs = (0..<4).map { pixels(64, seed: UInt64(10 + $0)) }
        let expected = try inputs.map { try model.grid($0).scalars }
        let results = LockedResults(count: inputs.count)
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            Threads.set(1)
            let grid = try? model.grid(inputs[i % 4])
            results.set(i % 4, grid?.scalars)
        }
        for i in 0..<4 { XCTAssertEqual(results.get(i), expected[i], "caller \(i)") }
    }

    // MARK: bad model files

    func testShapeConfigMismatchNamesTensor() throws {
        var config = smallConfig()
        let weights = randomVisualWeights(config, seed: 46)
        config.visual.width = 16  // the file was made for width 8
        XCTAssertThrowsError(try CLIPResNet(try store(weights), configuration: config)) {
            XCTAssertEqual($0 as? LightCapError, .shapeMismatch(key: "visual.conv1.weight", expected: [8, 3, 3, 3], actual: [4, 3, 3, 3]))
        }
    }

    func testNaNWeightRejected() throws {
        let config = smallConfig()
        var weights = randomVisualWeights(config, seed: 47)
        weights["visual.layer3.0.conv2.weight"]![flat: 17] = .nan
        XCTAssertThrowsError(try CLIPResNet(try store(weights), configuration: config)) {
            guard case .nonFiniteWeights(key: "visual.layer3.0.conv2.weight", index: 17, _) = $0 as? LightCapError else {
                return XCTFail("\($0)")
            }
        }
    }

    func testMissingTensorNamed() throws {
        let config = smallConfig()
        var weights = randomVisualWeights(config, seed: 48)
        weights["visual.layer2.1.conv3.bias"] = nil
        XCTAssertThrowsError(try CLIPResNet(try store(weights), configuration: config)) {
            XCTAssertEqual($0 as? LightCapError, .missingTensor(key: "visual.layer2.1.conv3.bias"))
        }
        // attention_pool in the config but not in the file.
        XCTAssertThrowsError(try CLIPResNet(try store(randomVisualWeights(config, seed: 48)), configuration: smallConfig(attentionPool: true))) {
            XCTAssertEqual($0 as? LightCapError, .missingTensor(key: "visual.attnpool.positional_embedding"))
        }
    }

    func testUnusedTensorsListed() throws {
        let config = smallConfig()
        var weights = randomVisualWeights(smallConfig(attentionPool: true), seed: 49)
        weights["visual.layer4.0.bn1.weight"] = Tensor(zeros: [64])
        let s = try store(weights)
        _ = try CLIPResNet(s, configuration: config)
        XCTAssertThrowsError(try s.finish()) {
            guard case .unusedTensors(let keys) = $0 as? LightCapError else { return XCTFail("\($0)") }
            XCTAssertTrue(keys.contains("visual.layer4.0.bn1.weight"))
            XCTAssertTrue(keys.contains("visual.attnpool.c_proj.weight"))
            XCTAssertEqual(keys.count, 10)
        }
    }

    func testWrongPixelCountIsAnError() throws {
        let config = smallConfig()
        let model = try CLIPResNet(try store(randomVisualWeights(config, seed: 50)), configuration: config)
        XCTAssertThrowsError(try model.grid(pixels: [Float](repeating: 0, count: 10)))
        XCTAssertThrowsError(try model.grid(Tensor(zeros: [3, 32, 32])))
        XCTAssertThrowsError(try model.pooled(grid: Tensor(zeros: [4, 256])))
    }
}

/// Results written by concurrent callers.
final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[Float]?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: [Float]?) {
        lock.lock(); defer { lock.unlock() }
        if let existing = values[i], existing != v { values[i] = [] } else { values[i] = v }
    }
    func get(_ i: Int) -> [Float]? { lock.lock(); defer { lock.unlock() }; return values[i] }
}
