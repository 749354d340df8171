// Model directories of the ablation configurations (docs/FORMAT.md: `concepts.enabled`,
// `modulator.enabled`): what loads, and the typed errors when config.json and the files disagree.
// Uses the fixtures of `python -m lightcap_train.tools.fixtures` (tiny, tiny-no-concepts, tiny-no-modulator,
// tiny-visual-positions).
import Foundation
import XCTest
import LightCapCore
@testable import LightCap

/// Model directories of the ablations: what loads (concepts.txt optional without concepts) and
/// the typed errors of directories whose config.json and weights disagree.
final class AblationLoadingTests: XCTestCase {
    /// A copy of `model` in a fresh temporary directory, without `dropping`, with config.json's
    /// sections updated by `sections` (section -> key -> value).
    func copy(_ model: URL, dropping: String? = nil, sections: [String: [String: Any]] = [:]) throws -> URL {
        let fm = FileManager.default
        let out = fm.temporaryDirectory.appendingPathComponent("lightcap-ablation-\(UUID().uuidString)")
        try fm.copyItem(at: model, to: out)
        if let dropping { try fm.removeItem(at: out.appendingPathComponent(dropping)) }
        if !sections.isEmpty {
            let url = out.appendingPathComponent("config.json")
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            for (section, values) in sections {
                config[section] = (config[section] as? [String: Any] ?? [:]).merging(values) { $1 }
            }
            try JSONSerialization.data(withJSONObject: config).write(to: url)
        }
        return out
    }

    func testNoConceptsModelNeedsNoConceptsFile() throws {
        guard let fx = try FixtureSet.load(size: "tiny-no-concepts") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let dir = try copy(fx.folder.appendingPathComponent("model"), dropping: "concepts.txt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let captioner = try Captioner(modelDirectory: dir)
        XCTAssertEqual(captioner.conceptNames, [])
        for c in fx.cases {
            let caption = try captioner.makeSession().caption(grid: try fx.tensor(c, "grid"), options: .init(beamSize: 1, maxLength: fx.maxLength))
            XCTAssertEqual(caption.tokenIds, try fx.ints(c, "greedy_ids"), c)
            XCTAssertEqual(caption.concepts, [], c)
        }
    }

    func testInconsistentAblationDirectoriesThrowTypedErrors() throws {
        guard let fx = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let model = fx.folder.appendingPathComponent("model")
        // Concepts switched off over a file that has them: the extractor and modulator weights are unused.
        let off = try copy(model, sections: ["concepts": ["enabled": false], "modulator": ["enabled": false]])
        defer { try? FileManager.default.removeItem(at: off) }
        XCTAssertThrowsError(try Captioner(modelDirectory: off)) { error in
            guard case .unusedTensors(let keys)? = error as? LightCapError else { return XCTFail("\(error)") }
            XCTAssertTrue(keys.contains("concepts.mlp.0.weight") && keys.contains("modulator.fc1.weight"), "\(keys)")
        }
        // Concepts on: concepts.txt is required.
        let noFile = try copy(model, dropping: "concepts.txt")
        defer { try? FileManager.default.removeItem(at: noFile) }
        XCTAssertThrowsError(try Captioner(modelDirectory: noFile)) { error in
            XCTAssertEqual(error as? LightCapError, .fileNotFound(path: noFile.appendingPathComponent("concepts.txt").path))
        }
        // The modulator switched on over a file without it: its weights are missing.
        guard let variant = try FixtureSet.load(size: "tiny-no-modulator") else { return }
        let on = try copy(variant.folder.appendingPathComponent("model"), sections: ["modulator": ["enabled": true]])
        defer { try? FileManager.default.removeItem(at: on) }
        XCTAssertThrowsError(try Captioner(modelDirectory: on)) { error in
            XCTAssertEqual(error as? LightCapError, .missingTensor(key: "modulator.fc1.weight"))
        }
    }

    /// `fusion.visual_position_embeddings` and the file must agree: a typed error either way.
    func testVisualPositionSwitchMustMatchTheWeights() throws {
        guard let fx = try FixtureSet.load(size: "tiny-visual-positions"),
              let plain = try FixtureSet.load(size: "tiny") else { throw XCTSkip("LIGHTCAP_FIXTURES not set") }
        let off = try copy(fx.folder.appendingPathComponent("model"), sections: ["fusion": ["visual_position_embeddings": false]])
        defer { try? FileManager.default.removeItem(at: off) }
        XCTAssertThrowsError(try Captioner(modelDirectory: off)) { error in
            guard case .unusedTensors(let keys)? = error as? LightCapError else { return XCTFail("\(error)") }
            XCTAssertEqual(keys, ["image_projection.position_embeddings"])
        }
        let on = try copy(plain.folder.appendingPathComponent("model"), sections: ["fusion": ["visual_position_embeddings": true]])
        defer { try? FileManager.default.removeItem(at: on) }
        XCTAssertThrowsError(try Captioner(modelDirectory: on)) { error in
            XCTAssertEqual(error as? LightCapError, .missingTensor(key: "image_projection.position_embeddings"))
        }
    }
}
