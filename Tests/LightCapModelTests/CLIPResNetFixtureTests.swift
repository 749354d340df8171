import XCTest
import Foundation
@testable import LightCapCore
@testable import LightCapModel

/// Parity with the PyTorch reference: fixtures written by `python -m lightcap_train.tools.fixtures`
/// into $LIGHTCAP_FIXTURES/{tiny,base}. Grid, pooled (attention pool) and, for tiny, the grid of
/// the unfolded-BatchNorm model: max abs diff <= 1e-4 of the output scale (max |expected|).
/// Skipped when LIGHTCAP_FIXTURES is unset; a failure when it is set and files are missing.
final class CLIPResNetFixtureTests: XCTestCase {
    static let tolerance: Float = 1e-4

    func fixtureRoot() throws -> URL {
        guard let path = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"], !path.isEmpty else {
            throw XCTSkip("LIGHTCAP_FIXTURES is not set")
        }
        return URL(fileURLWithPath: path)
    }

    struct Fixture {
        let cases: [String]
        let tensors: SafetensorsFile
        let model: ModelDirectory
        let root: URL
    }

    func fixture(_ size: String) throws -> Fixture {
        let root = try fixtureRoot().appendingPathComponent(size)
        let jsonURL = root.appendingPathComponent("fixtures.json")
        guard FileManager.default.fileExists(atPath: jsonURL.path) else {
            XCTFail("LIGHTCAP_FIXTURES is set but \(jsonURL.path) is missing")
            throw LightCapError.fileNotFound(path: jsonURL.path)
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: jsonURL)) as? [String: Any]
        let cases = json?["cases"] as? [String] ?? []
        XCTAssertFalse(cases.isEmpty, "no cases in \(jsonURL.path)")
        return Fixture(cases: cases, tensors: try SafetensorsFile(url: root.appendingPathComponent("fixtures.safetensors")),
                       model: try ModelDirectory(url: root.appendingPathComponent("model")), root: root)
    }

    func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = tolerance, _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        let scale = expected.maxAbs
        let diff = actual.maxAbsDifference(expected)
        XCTAssertGreaterThan(scale, 0, "\(what): expected output is all zero", file: file, line: line)
        XCTAssertLessThanOrEqual(diff, tolerance * scale, "\(what): max abs diff \(diff), scale \(scale)", file: file, line: line)
        return diff / scale
    }

    func checkGridAndPool(_ size: String) throws {
        let f = try fixture(size)
        let config = f.model.configuration
        let model = try CLIPResNet(try f.model.weightStore(), configuration: config)
        let workspace = try model.makeWorkspace()
        for c in f.cases {
            let input = try f.tensors.tensor(named: "\(c).input")
            XCTAssertEqual(input.shape, [3, config.image.size, config.image.size])
            let grid = try model.grid(input, workspace: workspace)
            let expected = try f.tensors.tensor(named: "\(c).grid")
            XCTAssertEqual(expected.shape, [config.visualTokens, config.gridChannels])
            _ = assertClose(grid, expected, "\(size) \(c).grid")
            if config.visual.attentionPool {
                _ = assertClose(try model.pooled(grid: grid), try f.tensors.tensor(named: "\(c).pooled"), "\(size) \(c).pooled")
            }
        }
    }

    func testTinyGridAndPooledMatchReference() throws { try checkGridAndPool("tiny") }

    func testBaseGridAndPooledMatchReference() throws { try checkGridAndPool("base") }

    func testTinyUnfoldedModelFoldsAtLoad() throws {
        let f = try fixture("tiny")
        let dir = try ModelDirectory(url: f.root.appendingPathComponent("model_unfolded"))
        XCTAssertFalse(dir.configuration.visual.batchnormFolded)
        let model = try CLIPResNet(try dir.weightStore(), configuration: dir.configuration)
        for c in f.cases {
            _ = assertClose(try model.grid(try f.tensors.tensor(named: "\(c).input")),
                            try f.tensors.tensor(named: "\(c).unfolded_grid"), "tiny \(c).unfolded_grid")
        }
    }

    /// Winograd's error on the reference grids (oneDNN's where it has kernels, and LightCap's
    /// F(4x4, 3x3) everywhere; reported; bound 1e-3 of the scale).
    func testWinogradErrorOnFixtures() throws {
        for policy in [ConvolutionPolicy.oneDNNWinograd, .lightcapWinograd] {
            for size in ["tiny", "base"] {
                let f = try fixture(size)
                let model = try CLIPResNet(try f.model.weightStore(), configuration: f.model.configuration, policy: policy)
                var worst: Float = 0
                for c in f.cases {
                    worst = max(worst, assertClose(try model.grid(try f.tensors.tensor(named: "\(c).input")),
                                                   try f.tensors.tensor(named: "\(c).grid"), tolerance: 1e-3,
                                                   "\(size) \(c).grid \(policy)"))
                }
                print("\(policy) \(size): max abs diff / scale = \(worst)")
            }
        }
    }
}
