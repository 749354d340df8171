import Foundation

// METEOR 1.5 through the jar that ships with pycocoevalcap, run by Java exactly as
// pycocoevalcap runs it (`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`, one SCORE
// line per image, then one EVAL line). METEOR's paraphrase tables and matcher are not
// reimplemented in Swift: without Java or the jar the metric is reported as unavailable.

/// METEOR through pycocoevalcap's jar.
public struct Meteor: Sendable {
    /// The jar (`meteor-1.5.jar`; its `data/paraphrase-en.gz` must sit beside it).
    public let jar: URL
    /// The `java` executable.
    public let java: URL

    public init(jar: URL, java: URL) {
        self.jar = jar
        self.java = java
    }

    /// Finds Java and the jar: `LIGHTCAP_METEOR_JAR`, else pycocoevalcap in a `.venv` of the
    /// current directory or of this package; nil (with the reason) when either is missing.
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> Result<Meteor, EvalError>
    {
        let fm = FileManager.default
        let path = environment["PATH"] ?? "/usr/bin:/bin"
        guard let java = path.split(separator: ":").map({ URL(fileURLWithPath: String($0)).appendingPathComponent("java") })
            .first(where: { fm.isExecutableFile(atPath: $0.path) })
        else { return .failure(.meteorUnavailable("java was not found on PATH")) }
        if let explicit = environment["LIGHTCAP_METEOR_JAR"] {
            guard fm.fileExists(atPath: explicit) else {
                return .failure(.meteorUnavailable("LIGHTCAP_METEOR_JAR=\(explicit) does not exist"))
            }
            return .success(Meteor(jar: URL(fileURLWithPath: explicit), java: java))
        }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        for root in [URL(fileURLWithPath: fm.currentDirectoryPath), packageRoot] {
            let lib = root.appendingPathComponent(".venv/lib")
            for python in (try? fm.contentsOfDirectory(atPath: lib.path)) ?? [] where python.hasPrefix("python") {
                let jar = lib.appendingPathComponent("\(python)/site-packages/pycocoevalcap/meteor/meteor-1.5.jar")
                if fm.fileExists(atPath: jar.path) { return .success(Meteor(jar: jar, java: java)) }
            }
        }
        return .failure(.meteorUnavailable(
            "meteor-1.5.jar not found (install pycocoevalcap in .venv or set LIGHTCAP_METEOR_JAR)"))
    }

    /// The corpus METEOR and per-image scores.
    public func score(hypotheses: [String], references: [[String]]) throws -> (score: Double, perImage: [Double]) {
        precondition(hypotheses.count == references.count, "one hypothesis per image")
        let process = Process()
        process.executableURL = java
        process.arguments = ["-jar", "-Xmx2G", jar.lastPathComponent, "-", "-", "-stdio", "-l", "en", "-norm"]
        process.currentDirectoryURL = jar.deletingLastPathComponent()
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { throw EvalError.meteorUnavailable("cannot start java: \(error)") }
        defer {
            try? stdin.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        let reader = LineReader(stdout.fileHandleForReading)
        func send(_ line: String) throws {
            try stdin.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
        }
        func receive() throws -> String {
            guard let line = reader.next() else { throw EvalError.meteorFailed("METEOR stopped answering") }
            return line.trimmingCharacters(in: .whitespaces)
        }
        var evalLine = "EVAL"
        for (hyp, refs) in zip(hypotheses, references) {
            let h = hyp.replacingOccurrences(of: "|||", with: "").replacingOccurrences(of: "  ", with: " ")
            try send((["SCORE"] + [refs.joined(separator: " ||| ")] + [h]).joined(separator: " ||| "))
            evalLine += " ||| " + (try receive())
        }
        try send(evalLine)
        var perImage: [Double] = []
        for _ in hypotheses {
            let line = try receive()
            guard let v = Double(line) else { throw EvalError.meteorFailed("unexpected METEOR output: \(line)") }
            perImage.append(v)
        }
        let last = try receive()
        guard let score = Double(last) else { throw EvalError.meteorFailed("unexpected METEOR output: \(last)") }
        return (score, perImage)
    }
}

/// Reads lines from a pipe.
final class LineReader {
    private let handle: FileHandle
    private var buffer = Data()

    init(_ handle: FileHandle) { self.handle = handle }

    func next() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<nl]
                buffer.removeSubrange(buffer.startIndex...nl)
                return String(decoding: line, as: UTF8.self)
            }
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            buffer.append(chunk)
        }
    }
}
