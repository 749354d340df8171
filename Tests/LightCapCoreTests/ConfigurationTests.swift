import XCTest
@testable import LightCapCore

/// config.json parsing: defaults, the FORMAT.md example, required format_version, bad values;
/// the model directory's file checks.
final class ConfigurationTests: XCTestCase {
    func testFormatExampleParses() throws {
        // docs/FORMAT.md's config.json example, verbatim.
        let json = """
        {
          "format_version": 1,
          "name": "tiny",
          "image": {"size": 128,
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711]},
          "visual": {"layers": [1, 1, 1, 1], "width": 16,
                     "attention_pool": false, "heads": 8, "output_dim": 128,
                     "batchnorm_folded": true},
          "concepts": {"enabled": true, "embed_dim": 128, "hidden_dim": 128, "top_k": 8, "windows": [1, 2, 3],
                       "prompt": "a photo of a {}"},
          "modulator": {"enabled": true, "hidden_dim": 16},
          "fusion": {"vocab_size": 64, "hidden_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "intermediate_size": 512,
                     "max_position_embeddings": 128, "type_vocab_size": 2,
                     "layer_norm_eps": 1e-12, "hidden_act": "gelu"},
          "heads": {"count": 3},
          "decoding": {"max_length": 20, "caption_segment_length": 22, "beam_size": 5},
          "tokens": {"cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", "pad": "[PAD]", "unk": "[UNK]"},
          "tokenizer": {"do_lower_case": true}
        }
        """
        let c = try Configuration.decode(Data(json.utf8))
        XCTAssertEqual(c, Configuration())  // the example is the tiny default
        XCTAssertEqual(c.gridChannels, 512)
        XCTAssertEqual(c.gridSide, 4)
        XCTAssertEqual(c.visualTokens, 16)
        XCTAssertEqual(c.fusion.layerNormEps, 1e-12)
        // Round trip through the encoder keeps every value and the snake_case keys.
        let encoded = try JSONEncoder().encode(c)
        XCTAssertTrue(String(decoding: encoded, as: UTF8.self).contains("\"caption_segment_length\""))
        XCTAssertEqual(try Configuration.decode(encoded), c)
    }

    /// Every model directory the reference writes parses, and the mirror keeps every key of it.
    func testFixtureConfigsRoundTrip() throws {
        guard let root = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"], !root.isEmpty else {
            throw XCTSkip("LIGHTCAP_FIXTURES is not set")
        }
        for dir in ["tiny/model", "tiny/model_unfolded", "base/model"] {
            let url = URL(fileURLWithPath: root).appendingPathComponent(dir).appendingPathComponent("config.json")
            let original = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! NSDictionary
            let config = try Configuration.load(contentsOf: url)
            let again = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as! NSDictionary
            func flatten(_ d: NSDictionary, _ prefix: String = "") -> Set<String> {
                var keys = Set<String>()
                for (k, v) in d {
                    let key = prefix + "\(k)"
                    if let sub = v as? NSDictionary { keys.formUnion(flatten(sub, key + ".")) } else { keys.insert(key) }
                }
                return keys
            }
            XCTAssertEqual(flatten(original).subtracting(flatten(again)), [], "\(dir): keys the mirror drops")
        }
    }

    func testDefaultsAndUnknownKeys() throws {
        let c = try Configuration.decode(Data(#"{"format_version": 1, "visual": {"width": 64, "layers": [3, 4, 6, 3]}, "image": {"size": 224}, "extra": 5}"#.utf8))
        XCTAssertEqual(c.visual.layers, [3, 4, 6, 3])
        XCTAssertEqual(c.gridChannels, 2048)
        XCTAssertEqual(c.gridSide, 7)
        XCTAssertEqual(c.visual.heads, 8)
        XCTAssertEqual(c.fusion, Configuration.Fusion())
    }

    func testFormatVersionRequired() {
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"name": "x"}"#.utf8))) {
            XCTAssertEqual($0 as? LightCapError, .invalidConfiguration(reason: "format_version is missing"))
        }
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"format_version": 2}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("format_version 2"))
        }
    }

    func testBadValuesNamed() {
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"format_version": 1, "image": {"size": 100}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("image.size"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"format_version": 1, "visual": {"width": "wide"}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("visual.width"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"format_version": 1, "concepts": {"enabled": false}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("modulator.enabled"), "\($0)")
        }
        XCTAssertNoThrow(try Configuration.decode(Data(#"{"format_version": 1, "concepts": {"enabled": false}, "modulator": {"enabled": false}}"#.utf8)))
        XCTAssertThrowsError(try Configuration.decode(Data("{not json".utf8))) {
            XCTAssertTrue("\($0)".contains("not valid JSON"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"format_version": 1, "fusion": {"hidden_size": 130, "num_attention_heads": 4}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("num_attention_heads"), "\($0)")
        }
    }

    func testModelDirectoryNamesMissingFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try ModelDirectory(url: dir.appendingPathComponent("nothing"))) {
            XCTAssertTrue("\($0)".contains("nothing"))
        }
        try Data(#"{"format_version": 1}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        try SafetensorsWriter.write(["a": .f32(Tensor(zeros: [1]))], to: dir.appendingPathComponent("model.safetensors"))
        try Data("[PAD]\n[UNK]\n".utf8).write(to: dir.appendingPathComponent("vocab.txt"))
        XCTAssertThrowsError(try ModelDirectory(url: dir)) {
            XCTAssertEqual($0 as? LightCapError, .fileNotFound(path: dir.appendingPathComponent("concepts.txt").path))
        }
        try Data("dog\nhot dog\n".utf8).write(to: dir.appendingPathComponent("concepts.txt"))
        let model = try ModelDirectory(url: dir)
        XCTAssertEqual(try model.conceptNames(), ["dog", "hot dog"])
        XCTAssertEqual(try model.vocabulary(), ["[PAD]", "[UNK]"])
        XCTAssertEqual(try model.weightStore().keys, ["a"])
        // Without concepts, concepts.txt is optional and ignored.
        try Data(#"{"format_version": 1, "concepts": {"enabled": false}, "modulator": {"enabled": false}}"#.utf8)
            .write(to: dir.appendingPathComponent("config.json"))
        XCTAssertEqual(try ModelDirectory(url: dir).conceptNames(), [])
        try FileManager.default.removeItem(at: dir.appendingPathComponent("concepts.txt"))
        XCTAssertEqual(try ModelDirectory(url: dir).conceptNames(), [])
    }
}
