// ModelDirectory: the four files of a LightCap model (docs/FORMAT.md, "Files").

import Foundation
import LightCapFiles

/// A model directory: `config.json`, `model.safetensors`, `vocab.txt`, `concepts.txt`.
/// Opening it checks that every file is there and parses the configuration. `concepts.txt` is
/// needed only with `concepts.enabled` (without the concept extractor it is optional and ignored).
public struct ModelDirectory: Sendable {
    /// The directory.
    public let url: URL
    /// The parsed, validated `config.json`.
    public let configuration: Configuration

    /// `config.json`.
    public var configURL: URL { url.appendingPathComponent("config.json") }
    /// `model.safetensors`.
    public var weightsURL: URL { url.appendingPathComponent("model.safetensors") }
    /// `vocab.txt`.
    public var vocabURL: URL { url.appendingPathComponent("vocab.txt") }
    /// `concepts.txt`.
    public var conceptsURL: URL { url.appendingPathComponent("concepts.txt") }

    /// Opens the model directory at `url`; throws naming the missing file or the bad config value.
    public init(url: URL) throws {
        self.url = url
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LightCapError.fileNotFound(path: url.path + " (model directory)")
        }
        for file in [url.appendingPathComponent("config.json"), url.appendingPathComponent("model.safetensors"),
                     url.appendingPathComponent("vocab.txt")] {
            guard FileManager.default.fileExists(atPath: file.path) else {
                throw LightCapError.fileNotFound(path: file.path)
            }
        }
        configuration = try Configuration.load(contentsOf: url.appendingPathComponent("config.json"))
        let concepts = url.appendingPathComponent("concepts.txt")
        guard !configuration.concepts.enabled || FileManager.default.fileExists(atPath: concepts.path) else {
            throw LightCapError.fileNotFound(path: concepts.path)
        }
    }

    /// Maps and validates `model.safetensors`.
    public func openWeights() throws -> SafetensorsFile {
        try SafetensorsFile(url: weightsURL)
    }

    /// A strict weight store over `model.safetensors`.
    public func weightStore() throws -> WeightStore {
        WeightStore(file: try openWeights())
    }

    /// The concept names, one per line of `concepts.txt` (trailing empty line ignored); none
    /// when `concepts.enabled` is false (the file is then ignored, as the reference does).
    public func conceptNames() throws -> [String] {
        guard configuration.concepts.enabled else { return [] }
        return try ModelDirectory.lines(of: conceptsURL)
    }

    /// The lines of `vocab.txt`.
    public func vocabulary() throws -> [String] {
        try ModelDirectory.lines(of: vocabURL)
    }

    static func lines(of url: URL) throws -> [String] {
        guard let data = try? FileContents.read(url), let lines = FileContents.lines(data) else {
            throw LightCapError.io(path: url.path, reason: "not readable as UTF-8 text")
        }
        return lines
    }
}
