import LightCapTestSupport
import XCTest
@testable import LightCapCore

/// config.json parsing: defaults, the FORMAT.md example, required keys named, bad values;
/// the model directory's file checks.
final class ConfigurationTests: XCTestCase {
    /// docs/FORMAT.md's config.json example, verbatim.
    static let example = """
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

    /// The example with `sections` merged in (section -> key -> value), `top` keys set and the
    /// dotted `removing` paths (`fusion.hidden_size`, `heads`) deleted.
    func example(_ sections: [String: [String: Any]] = [:], top: [String: Any] = [:],
                 removing: [String] = []) throws -> Data {
        var config = try JSONSerialization.jsonObject(with: Data(Self.example.utf8)) as! [String: Any]
        for (section, values) in sections {
            config[section] = (config[section] as? [String: Any] ?? [:]).merging(values) { $1 }
        }
        config.merge(top) { $1 }
        for path in removing {
            let parts = path.split(separator: ".").map(String.init)
            if parts.count == 1 {
                config.removeValue(forKey: parts[0])
            } else {
                var section = config[parts[0]] as! [String: Any]
                section.removeValue(forKey: parts[1])
                config[parts[0]] = section
            }
        }
        return try JSONSerialization.data(withJSONObject: config)
    }

    func testFormatExampleParses() throws {
        let json = Self.example
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

    /// The keys with a natural default may be left out; unknown keys are ignored.
    func testDefaultsAndUnknownKeys() throws {
        let optional = ["name", "image.mean", "image.std", "visual.attention_pool", "visual.heads", "visual.output_dim",
                        "visual.batchnorm_folded", "concepts.enabled", "concepts.windows", "concepts.prompt",
                        "modulator.enabled", "fusion.layer_norm_eps", "fusion.hidden_act", "decoding", "tokens", "tokenizer"]
        let c = try Configuration.decode(try example(["visual": ["width": 64, "layers": [3, 4, 6, 3]], "image": ["size": 224]],
                                                     top: ["extra": 5], removing: optional))
        XCTAssertEqual(c.visual.layers, [3, 4, 6, 3])
        XCTAssertEqual(c.gridChannels, 2048)
        XCTAssertEqual(c.gridSide, 7)
        let tiny = Configuration()
        XCTAssertEqual(c.visual.heads, 8)
        XCTAssertEqual(c.name, tiny.name)
        XCTAssertEqual(c.image.mean, tiny.image.mean)
        XCTAssertEqual(c.fusion, tiny.fusion)
        XCTAssertEqual(c.decoding, tiny.decoding)
        XCTAssertEqual(c.tokens, tiny.tokens)
        XCTAssertTrue(c.concepts.enabled && c.modulator.enabled)
    }

    /// A size key or a section holding them, left out, is an error naming its path (never a
    /// `tiny` size: a config.json without fusion.hidden_size must not load as 128).
    func testMissingSizeKeysNamed() throws {
        let required = ["image.size", "visual.layers", "visual.width",
                        "concepts.embed_dim", "concepts.hidden_dim", "concepts.top_k", "modulator.hidden_dim",
                        "fusion.vocab_size", "fusion.hidden_size", "fusion.num_hidden_layers", "fusion.num_attention_heads",
                        "fusion.intermediate_size", "fusion.max_position_embeddings", "fusion.type_vocab_size",
                        "heads.count", "image", "visual", "concepts", "modulator", "fusion", "heads"]
        for path in required {
            XCTAssertThrowsError(try Configuration.decode(try example(removing: [path])), path) {
                XCTAssertEqual($0 as? LightCapError, .invalidConfiguration(reason: "\(path) is missing"))
                XCTAssertEqual("\($0)", "invalid configuration: \(path) is missing")
            }
        }
        // A null value is as missing as an absent key.
        XCTAssertThrowsError(try Configuration.decode(try example(["fusion": ["hidden_size": NSNull()]]))) {
            XCTAssertEqual("\($0)", "invalid configuration: fusion.hidden_size is missing")
        }
        // The attention pool's sizes are required with the pool only.
        for path in ["visual.heads", "visual.output_dim"] {
            XCTAssertThrowsError(try Configuration.decode(try example(["visual": ["attention_pool": true]], removing: [path]))) {
                XCTAssertEqual($0 as? LightCapError, .invalidConfiguration(reason: "\(path) is missing"))
            }
        }
        // Without concepts the extractor's and the modulator's sizes (and the modulator section) may go.
        let noConcepts = try Configuration.decode(try example(
            ["concepts": ["enabled": false], "modulator": ["enabled": false]],
            removing: ["concepts.embed_dim", "concepts.hidden_dim", "concepts.top_k", "modulator.hidden_dim"]))
        XCTAssertFalse(noConcepts.concepts.enabled)
        // No modulator section then means the default (enabled), which validation rejects with the reason.
        XCTAssertThrowsError(try Configuration.decode(try example(["concepts": ["enabled": false]], removing: ["modulator"]))) {
            XCTAssertTrue("\($0)".contains("modulator.enabled requires concepts.enabled"), "\($0)")
        }
    }

    func testFormatVersionRequired() throws {
        XCTAssertThrowsError(try Configuration.decode(Data(#"{"name": "x"}"#.utf8))) {
            XCTAssertEqual($0 as? LightCapError, .invalidConfiguration(reason: "format_version is missing"))
        }
        // Another version is rejected before its keys are read.
        for data in [Data(#"{"format_version": 2}"#.utf8), try example(top: ["format_version": 2])] {
            XCTAssertThrowsError(try Configuration.decode(data)) {
                XCTAssertTrue("\($0)".contains("format_version 2"), "\($0)")
            }
        }
    }

    func testBadValuesNamed() throws {
        XCTAssertThrowsError(try Configuration.decode(try example(["image": ["size": 100]]))) {
            XCTAssertTrue("\($0)".contains("image.size"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(try example(["visual": ["width": "wide"]]))) {
            XCTAssertTrue("\($0)".contains("visual.width"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(try example(["concepts": ["enabled": false]]))) {
            XCTAssertTrue("\($0)".contains("modulator.enabled"), "\($0)")
        }
        XCTAssertNoThrow(try Configuration.decode(try example(["concepts": ["enabled": false], "modulator": ["enabled": false]])))
        XCTAssertThrowsError(try Configuration.decode(Data("{not json".utf8))) {
            XCTAssertTrue("\($0)".contains("not valid JSON"), "\($0)")
        }
        XCTAssertThrowsError(try Configuration.decode(try example(["fusion": ["hidden_size": 130, "num_attention_heads": 4]]))) {
            XCTAssertTrue("\($0)".contains("num_attention_heads"), "\($0)")
        }
    }

    /// Sizes near Int.max are refused by name: `decoding.max_length + 2` and `visual.width * 32`
    /// used to overflow (a trap that stopped the process) while validating.
    func testHugeSizesAreErrorsNotOverflows() throws {
        let huge = Int.max
        let cases: [(String, [String: [String: Any]])] = [
            ("decoding.max_length", ["decoding": ["max_length": huge]]),
            ("visual.width", ["visual": ["width": 1 << 62, "attention_pool": true]]),
            ("image.size", ["image": ["size": 1 << 62]]),
            ("image.size", ["image": ["size": 8192]]),
            ("decoding.beam_size", ["decoding": ["beam_size": 100_000]]),
            ("fusion.hidden_size", ["fusion": ["hidden_size": huge - 1, "num_attention_heads": 1]]),
            ("visual.layers", ["visual": ["layers": [1, 1, huge, 1]]]),
        ]
        for (key, override) in cases {
            XCTAssertThrowsError(try Configuration.decode(try example(override)), key) {
                guard case LightCapError.invalidConfiguration(let reason) = $0 else { return XCTFail("\($0)") }
                XCTAssertTrue(reason.contains(key) && reason.contains("over the limit"), reason)
            }
        }
        XCTAssertNoThrow(try Configuration.decode(try example(["fusion": ["intermediate_size": Configuration.maxSize]])))
    }

    func testModelDirectoryNamesMissingFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try ModelDirectory(url: dir.appendingPathComponent("nothing"))) {
            XCTAssertTrue("\($0)".contains("nothing"))
        }
        try example().write(to: dir.appendingPathComponent("config.json"))
        try SafetensorsWriter.write(["a": .f32(Tensor(zeros: [1]))], to: dir.appendingPathComponent("model.safetensors"))
        try Data("[PAD]\n[UNK]\n".utf8).write(to: dir.appendingPathComponent("vocab.txt"))
        XCTAssertThrowsError(try ModelDirectory(url: dir)) {
            XCTAssertEqual($0 as? LightCapError, .fileNotFound(path: dir.appendingPathComponent("concepts.txt").path))
        }
        try Data("dog\nhot dog\n".utf8).write(to: dir.appendingPathComponent("concepts.txt"))
        let model = try ModelDirectory(url: dir)
        XCTAssertEqual(try model.conceptNames(), ["dog", "hot dog"])
        XCTAssertEqual(try model.vocabulary(), ["[PAD]", "[UNK]"])
        // Lines as the reference's read_lines (Python's universal newlines): "\r\n" and a lone "\r"
        // end a line too; only the last empty line is dropped.
        try Data("dog\r\nhot dog\rcat\n\n".utf8).write(to: dir.appendingPathComponent("concepts.txt"))
        XCTAssertEqual(try ModelDirectory(url: dir).conceptNames(), ["dog", "hot dog", "cat", ""])
        XCTAssertEqual(try model.weightStore().keys, ["a"])
        // Without concepts, concepts.txt is optional and ignored.
        try example(["concepts": ["enabled": false], "modulator": ["enabled": false]])
            .write(to: dir.appendingPathComponent("config.json"))
        XCTAssertEqual(try ModelDirectory(url: dir).conceptNames(), [])
        try FileManager.default.removeItem(at: dir.appendingPathComponent("concepts.txt"))
        XCTAssertEqual(try ModelDirectory(url: dir).conceptNames(), [])
    }

    /// An empty config.json, vocab.txt or concepts.txt is a typed error and costs no memory:
    /// Foundation's Data(contentsOf:) / String(contentsOf:) leak 4 KiB on each empty file, which a
    /// service reloading models or a tool scanning directories would pay every time.
    func testEmptyFilesAreErrorsAndLeakNothing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-empty-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("config.json")
        FileManager.default.createFile(atPath: config.path, contents: Data())
        XCTAssertThrowsError(try Configuration.load(contentsOf: config)) {
            guard case LightCapError.invalidConfiguration = $0 else { return XCTFail("\($0)") }
        }
        let vocab = dir.appendingPathComponent("vocab.txt")
        FileManager.default.createFile(atPath: vocab.path, contents: Data())
        XCTAssertEqual(try ModelDirectory.lines(of: vocab), [])
        let growth = ProcessMemory.growth(repeating: 5_000) {
            _ = try? Configuration.load(contentsOf: config)
            _ = try? ModelDirectory.lines(of: vocab)
        }
        XCTAssertLessThan(growth, 16 << 20, "reading empty files leaks")  // 4 KiB a read would be 40 MB
    }
}
