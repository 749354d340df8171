// What the fuzz targets share: a private scratch directory for parsers that read files, the
// splitter that cuts one input into several files, the repository's root (for the default model),
// and the check that an error is one of the engine's typed errors.
import Foundation

public enum Fuzz {
    /// The repository's root, from this file's path (Fuzzing/Sources/FuzzSupport/FuzzSupport.swift).
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `models/default` of the repository.
    public static var defaultModel: URL { repositoryRoot.appendingPathComponent("models/default") }

    /// A directory of this process's own, emptied by `reset()`.
    public static let scratch: URL = {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("lightcap-fuzz-\(ProcessInfo.processInfo.processIdentifier)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: Fuzz.scratch) }
        return url
    }()

    /// Writes `data` to the scratch file `name` and returns its URL.
    public static func file(_ name: String, _ data: Data) -> URL {
        let url = scratch.appendingPathComponent(name)
        FileManager.default.createFile(atPath: url.path, contents: data)
        return url
    }

    /// Removes the scratch file `name` (so that a later input may find it absent).
    public static func remove(_ name: String) {
        unlink(scratch.appendingPathComponent(name).path)
    }

    /// The bytes between separators: an input made of several files (model directory, COCO pairs,
    /// HTTP requests) keeps its files apart with this line, which the seed script writes too.
    public static let separator = Data("\n--lightcap-fuzz-part--\n".utf8)

    /// Cuts `data` at every separator; at most `limit` parts (the last one keeps the rest).
    public static func split(_ data: Data, limit: Int) -> [Data] {
        var parts: [Data] = []
        var rest = data[...]
        while parts.count < limit - 1, let r = rest.range(of: separator) {
            parts.append(Data(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        parts.append(Data(rest))
        return parts
    }

    /// The input bytes libFuzzer passes (`start` may be nil when `count` is 0).
    public static func data(_ start: UnsafeRawPointer?, _ count: Int) -> Data {
        guard let start, count > 0 else { return Data() }
        return Data(bytes: start, count: count)
    }

    /// Stops the process (a finding) when `error` is not one of the engine's typed errors:
    /// every rejection must say what is wrong, not leak a Foundation or library error.
    public static func expectTyped(_ error: any Error, _ allowed: [Any.Type], _ what: String) {
        let type = type(of: error)
        guard allowed.contains(where: { $0 == type }) else {
            fatalError("\(what): untyped error \(type): \(error)")
        }
        guard !"\(error)".isEmpty else { fatalError("\(what): error without a message: \(type)") }
    }
}
