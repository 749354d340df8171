// `lightcap caption --stream`: captioning as one stage of a pipeline (Spark's RDD.pipe, Hadoop
// Streaming, a subprocess in Ray Data's map_batches). Each input line, a path or a JSON record
// {"id","path"} / {"id","image_base64"}, gives exactly one JSON line out, in input order, written
// with one write(2) as soon as it is made; an input that fails (unreadable image, bad JSON,
// missing key, bad base64) gives a record {"id","error"} instead of a missing line, so outputs
// line up with inputs. --shard keeps one shard of the inputs (a stable hash of the path);
// --resume appends to an output file and skips the inputs whose id it already holds.
// docs/SCALE.md describes the contract and how engines use it.

import ArgumentParser
import Foundation
import LightCapFiles
import LightCap
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension CaptionCommand {
    /// The largest image_base64 image when --max-image-mb is not given (that of `lightcap serve`'s bodies).
    static let defaultMaxImageMB = 32.0

    func validateStream() throws {
        if let format, format != .jsonl { throw ValidationError("--stream writes jsonl; --format \(format.rawValue) does not apply") }
        if sidecar != nil { throw ValidationError("--sidecar does not apply with --stream") }
        if batch != nil { throw ValidationError("--batch does not apply with --stream (each line is answered as soon as it is captioned)") }
        if paths.count > 1 && paths.contains("-") {
            throw ValidationError("with --stream, '-' (standard input) must be the only input")
        }
        if let shard { _ = try Shard(parsing: shard) }
        if let resume, resume.isEmpty || resume == "-" { throw ValidationError("--resume needs an output file") }
        if let maxImageMB, !(maxImageMB > 0 && maxImageMB <= 1024) {
            throw ValidationError("--max-image-mb must lie in (0, 1024], got \(maxImageMB)")
        }
    }

    func runStream() throws {
        let shard = try self.shard.map { try Shard(parsing: $0) }
        let maxImageBytes = Int((maxImageMB ?? Self.defaultMaxImageMB) * 1024 * 1024)
        // Inputs: standard input when no path or '-' is given (read as it arrives), else the
        // images the paths name.
        var next: () throws -> StreamInput?
        if paths.isEmpty || paths == ["-"] {
            // A line holds at most the base64 of the largest image and a little JSON around it;
            // longer lines are skipped to their end unread.
            var reader = LineReader(fd: 0, maxBytes: 4 * (maxImageBytes / 3 + 1) + 65_536)
            var number = 0
            next = {
                guard let line = try reader.next() else { return nil }
                number += 1
                switch line {
                case .text(let text): return StreamInput.parse(text, line: number)
                case .tooLong(let bytes): return StreamInput(line: number, problem: "input line too long (\(bytes) bytes)")
                }
            }
        } else {
            var files = try ImageInputs.expand(paths).makeIterator()
            var number = 0
            next = {
                guard let path = files.next() else { return nil }
                number += 1
                return StreamInput(path: path, line: number)
            }
        }
        // The output, and what it already holds when resuming.
        let sink: OutputSink
        var done: Set<ResumeKey> = []
        if let resume {
            let existing = try ResumeFile.prepare(path: resume)
            done = existing.keys
            sink = try OutputSink(appendingTo: resume)
            printError("lightcap: \(resume): \(existing.records) records already there; appending the rest")
        } else {
            sink = OutputSink(fd: 1)
        }
        let loaded = try model.loadCaptioner()
        let captioner = StreamCaptioner(session: try loaded.makeSession(), options: try decoding.options(for: loaded),
                                        maxImageBytes: maxImageBytes)
        let progress = StreamProgress()
        while let input = try next() {
            if let shard, !shard.contains(input.shardKey) {
                progress.otherShard += 1
                continue
            }
            if done.contains(input.resumeKey) {
                progress.skipped += 1
                continue
            }
            let (line, failed) = captioner.record(for: input)
            try sink.write(line)
            progress.count(failed: failed)
        }
        progress.summary(resumeFile: resume, shard: shard)
    }
}

// MARK: - inputs

/// The id a record carries: a string (a path line's path) or an integer, echoed as given.
enum RecordID: Hashable, Codable {
    case string(String)
    case integer(Int)

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let i = try? c.decode(Int.self) {
            self = .integer(i)
        } else {
            self = .string(try c.decode(String.self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .integer(let i): try c.encode(i)
        }
    }

    var text: String {
        switch self {
        case .string(let s): return s
        case .integer(let i): return String(i)
        }
    }
}

/// What --resume matches an input by: its id, or, for a line that has none (bad JSON, an empty
/// line), its line number.
enum ResumeKey: Hashable {
    case id(RecordID)
    case line(Int)
}

/// One input, parsed: what to caption, or why it cannot be.
struct StreamInput {
    enum Source {
        case path(String)
        case base64(String)
    }

    /// 1-based position among the inputs.
    var line: Int
    /// nil when the line names no usable id (the record then carries `line`).
    var id: RecordID?
    var source: Source?
    /// Set when the input cannot be captioned; its record is an error record.
    var problem: String?
    /// What decides the shard: the path, else the id, else the raw line.
    var shardKey: String

    var resumeKey: ResumeKey { id.map { .id($0) } ?? .line(line) }

    /// A path line: the path is also the id.
    init(path: String, line: Int) {
        self.init(line: line, id: .string(path), source: .path(path), shardKey: path)
    }

    /// An input that cannot be captioned.
    init(line: Int, id: RecordID? = nil, problem: String, shardKey: String = "") {
        self.init(line: line, id: id, source: nil, problem: problem, shardKey: shardKey)
    }

    private init(line: Int, id: RecordID?, source: Source? = nil, problem: String? = nil, shardKey: String) {
        self.line = line
        self.id = id
        self.source = source
        self.problem = problem
        self.shardKey = shardKey
    }

    /// A line of standard input: a JSON record when it starts with "{", else a path.
    static func parse(_ text: String, line: Int) -> StreamInput {
        let trimmed = ImageInputs.pathLine(text)
        if trimmed.isEmpty { return StreamInput(line: line, problem: "empty input line") }
        guard trimmed.hasPrefix("{") else { return StreamInput(path: trimmed, line: line) }
        let record: JSONRecord
        do {
            record = try JSONDecoder().decode(JSONRecord.self, from: Data(trimmed.utf8))
        } catch {
            return StreamInput(line: line, problem: "input line is not valid JSON", shardKey: trimmed)
        }
        // A record without an id takes its path as id (as a path line does); one whose id is
        // unusable reports none.
        let id = record.idInvalid ? nil : record.id ?? record.path.map { .string($0) }
        let key = record.path ?? id?.text ?? trimmed
        func failed(_ problem: String) -> StreamInput { StreamInput(line: line, id: id, problem: problem, shardKey: key) }
        if let problem = record.problem { return failed(problem) }
        switch (record.path, record.imageBase64) {
        case (let path?, nil):
            return StreamInput(line: line, id: id, source: .path(path), shardKey: key)
        case (nil, let base64?):
            guard let id else { return failed("a record with image_base64 needs an id") }
            return StreamInput(line: line, id: id, source: .base64(base64), shardKey: key)
        case (nil, nil): return failed("a record needs \"path\" or \"image_base64\"")
        case (_?, _?): return failed("a record takes \"path\" or \"image_base64\", not both")
        }
    }
}

/// The keys of a JSON input record. A key of the wrong type is kept as `problem` (the record
/// still reports its id); other keys are ignored.
private struct JSONRecord: Decodable {
    var id: RecordID?
    var path: String?
    var imageBase64: String?
    var idInvalid = false
    var problem: String?

    enum Key: String, CodingKey {
        case id, path
        case imageBase64 = "image_base64"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        func present(_ key: Key) -> Bool { c.contains(key) && (try? c.decodeNil(forKey: key)) == false }
        if present(.id) {
            id = try? c.decode(RecordID.self, forKey: .id)
            if id == nil {
                idInvalid = true
                problem = "\"id\" must be a string or an integer"
            }
        }
        for key in [Key.path, .imageBase64] where present(key) {
            guard let value = try? c.decode(String.self, forKey: key) else {
                problem = problem ?? "\"\(key.stringValue)\" must be a string"
                continue
            }
            if key == .path { path = value } else { imageBase64 = value }
        }
    }
}

/// Shard K of N: the inputs whose key hashes to K. The hash is FNV-1a (64-bit) of the key's
/// UTF-8 bytes, mapped to 0..<N by its high bits (floor(hash * N / 2^64)), so it is the same on
/// every machine, run and language (docs/SCALE.md has it in Python).
struct Shard: Equatable {
    let index: Int
    let count: Int

    init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, (0..<n).contains(k) else {
            throw ValidationError("--shard takes K/N with 0 <= K < N (shards count from 0), got '\(text)'")
        }
        index = k
        count = n
    }

    static func index(of key: String, count: Int) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int(hash.multipliedFullWidth(by: UInt64(count)).high)
    }

    func contains(_ key: String) -> Bool { Self.index(of: key, count: count) == index }
}

/// Lines of a file descriptor, read in 64 KiB chunks as they arrive. A line longer than
/// `maxBytes` is skipped to its end without being kept, and reported by its length.
struct LineReader {
    enum Line {
        case text(String)
        case tooLong(bytes: Int)
    }

    let fd: Int32
    let maxBytes: Int
    private var buffer: [UInt8] = []
    /// Start of the unread bytes in `buffer`.
    private var start = 0
    /// Where to go on looking for a newline (the bytes before it have none).
    private var scanned = 0
    /// Bytes of an over-long line dropped so far.
    private var dropped: Int?
    private var atEnd = false

    init(fd: Int32, maxBytes: Int) {
        self.fd = fd
        self.maxBytes = maxBytes
    }

    mutating func next() throws -> Line? {
        while true {
            if let newline = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                let bytes = buffer[start..<newline]
                start = newline + 1
                scanned = start
                if let d = dropped {
                    dropped = nil
                    return .tooLong(bytes: d + bytes.count)
                }
                return .text(Self.text(bytes))
            }
            let pending = buffer.count - start
            if dropped != nil || pending > maxBytes {
                dropped = (dropped ?? 0) + pending
                buffer.removeAll(keepingCapacity: true)
                start = 0
                scanned = 0
            }
            if atEnd {
                defer { buffer = []; start = 0; scanned = 0 }
                if let d = dropped {
                    dropped = nil
                    return .tooLong(bytes: d)
                }
                return pending > 0 ? .text(Self.text(buffer[start...])) : nil
            }
            // Keep the partial line at the front (once per line), then read more.
            if start > 0 {
                buffer.removeSubrange(0..<start)
                start = 0
            }
            scanned = buffer.count
            try fill()
        }
    }

    /// Appends what one read(2) gives (atEnd at the end of the input).
    private mutating func fill() throws {
        let chunk = 65_536
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: chunk))
        let n = buffer.withUnsafeMutableBytes { posixRead(fd, $0.baseAddress! + old, chunk) }
        guard n >= 0 else {
            buffer.removeSubrange(old...)
            throw CLIError.unreadableFile("standard input", String(cString: strerror(errno)))
        }
        buffer.removeSubrange((old + n)...)
        if n == 0 { atEnd = true }
    }

    /// The line as text, without a carriage return before its newline.
    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.last == UInt8(ascii: "\r") ? bytes.dropLast() : bytes, as: UTF8.self)
    }
}

// MARK: - records

/// Makes the output line of one input.
struct StreamCaptioner {
    let session: CaptionSession
    let options: DecodingOptions
    let maxImageBytes: Int
    let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// The JSON line (newline included) and whether it is an error record.
    func record(for input: StreamInput) -> (Data, failed: Bool) {
        var record = StreamRecord(id: input.id, line: input.line, path: nil, outcome: .failure(input.problem ?? ""))
        if case .path(let path) = input.source { record.path = path }
        if input.problem == nil, let source = input.source {
            do {
                record.outcome = .caption(CaptionCommand.Record(path: record.path, caption: try caption(source)))
            } catch {
                record.outcome = .failure("\(error)")
            }
        }
        var data: Data
        do {
            data = try encoder.encode(record)
        } catch {
            record.outcome = .failure("cannot write the caption as JSON: \(error)")
            data = (try? encoder.encode(record)) ?? Data(#"{"error":"cannot write the record as JSON"}"#.utf8)
        }
        data.append(UInt8(ascii: "\n"))
        if case .failure = record.outcome { return (data, true) }
        return (data, false)
    }

    private func caption(_ source: StreamInput.Source) throws -> Caption {
        switch source {
        case .path(let path):
            return try session.caption(imageAt: URL(fileURLWithPath: path), options: options)
        case .base64(let text):
            // The size is checked on the encoded text, before anything is decoded; the image
            // decoder then checks the header's dimensions against its limits before it allocates.
            guard text.utf8.count <= 4 * ((maxImageBytes + 2) / 3) else {
                throw CLIError.badUse(String(format: "image_base64 holds more than %.0f MiB (--max-image-mb)",
                                             Double(maxImageBytes) / 1_048_576))
            }
            guard let data = Data(base64Encoded: text) else { throw CLIError.badUse("image_base64 is not valid base64") }
            return try session.caption(imageData: data, options: options)
        }
    }
}

/// One output line: the input's id (null, with `line`, when it has none), its path when it has
/// one, then the caption fields of `--format jsonl`, or `error`.
struct StreamRecord: Encodable {
    enum Outcome {
        case caption(CaptionCommand.Record)
        case failure(String)
    }

    var id: RecordID?
    var line: Int
    var path: String?
    var outcome: Outcome

    enum Key: String, CodingKey { case id, line, path, error }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        if let id {
            try c.encode(id, forKey: .id)
        } else {
            try c.encodeNil(forKey: .id)
            try c.encode(line, forKey: .line)
        }
        switch outcome {
        case .caption(let record):
            try record.encode(to: encoder)  // path, caption, score, concepts, timings
        case .failure(let message):
            try c.encodeIfPresent(path, forKey: .path)
            try c.encode(message, forKey: .error)
        }
    }
}

/// Standard output or an output file, written one whole line per write(2) so that a reader
/// (or a kill) never sees half a line from a buffer.
final class OutputSink {
    let fd: Int32
    let owned: Bool

    init(fd: Int32) {
        self.fd = fd
        owned = false
    }

    init(appendingTo path: String) throws {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CLIError.unreadableFile(path, "cannot open for appending: \(String(cString: strerror(errno)))") }
        owned = true
    }

    deinit { if owned { close(fd) } }

    func write(_ data: Data) throws {
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = posixWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                guard n > 0 else { throw CLIError.badUse("cannot write the output: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
    }
}

/// read(2), retried when a signal interrupts it.
private func posixRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    while true {
        let n = read(fd, buffer, count)
        if n >= 0 || errno != EINTR { return n }
    }
}

/// write(2), retried when a signal interrupts it.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    while true {
        let n = write(fd, buffer, count)
        if n >= 0 || errno != EINTR { return n }
    }
}

// MARK: - resume

/// An output file of an earlier --stream run, made ready to append to.
enum ResumeFile {
    /// The keys of the records in the file at `path` (none if it does not exist). A last line
    /// without its newline was torn by a kill: kept (newline added) when it is a whole record,
    /// else cut off, and said on standard error. Any other line that is not a record of this
    /// mode stops the run: appending to a file that is not ours would corrupt it.
    static func prepare(path: String) throws -> (keys: Set<ResumeKey>, records: Int) {
        guard FileManager.default.fileExists(atPath: path) else { return ([], 0) }
        let data: Data
        do { data = try FileContents.read(URL(fileURLWithPath: path), options: .mappedIfSafe) } catch {
            throw CLIError.unreadableFile(path, (error as NSError).localizedDescription)
        }
        var keys: Set<ResumeKey> = []
        var records = 0
        let decoder = JSONDecoder()
        var lineStart = data.startIndex
        var number = 0
        while lineStart < data.endIndex {
            number += 1
            let newline = data[lineStart...].firstIndex(of: UInt8(ascii: "\n"))
            let bytes = data[lineStart..<(newline ?? data.endIndex)]
            let key = (try? decoder.decode(OutputKey.self, from: bytes))?.key
            guard let newline else {
                try repairTornLine(path: path, at: lineStart - data.startIndex, length: bytes.count, whole: key != nil)
                if let key {
                    keys.insert(key)
                    records += 1
                }
                break
            }
            if let key {
                keys.insert(key)
                records += 1
            } else if !bytes.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) {
                throw CLIError.badUse("\(path): line \(number) is not a record of `lightcap caption --stream` (a JSON object with \"id\"); not appending to it")
            }
            lineStart = newline + 1
        }
        return (keys, records)
    }

    private static func repairTornLine(path: String, at offset: Int, length: Int, whole: Bool) throws {
        guard let handle = FileHandle(forUpdatingAtPath: path) else {
            throw CLIError.unreadableFile(path, "cannot open for repair")
        }
        defer { try? handle.close() }
        if whole {
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("\n".utf8))
            printError("lightcap: \(path): the last record had no newline (an interrupted run); added it")
        } else {
            try handle.truncate(atOffset: UInt64(offset))
            printError("lightcap: \(path): dropped a torn last line (\(length) bytes without a newline, left by an interrupted run); its input is captioned again")
        }
    }

    /// The resume key of an output record.
    private struct OutputKey: Decodable {
        let key: ResumeKey

        enum Key: String, CodingKey { case id, line }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            if let id = try c.decodeIfPresent(RecordID.self, forKey: .id) {
                key = .id(id)
            } else if c.contains(.id), let line = try c.decodeIfPresent(Int.self, forKey: .line) {
                key = .line(line)
            } else {
                throw DecodingError.keyNotFound(Key.id, .init(codingPath: [], debugDescription: "no id"))
            }
        }
    }
}

// MARK: - progress

/// Images per second on standard error while a stream runs: a line every 10 s (rewritten in
/// place on a terminal, several times a second), and a summary at the end.
final class StreamProgress {
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now
    private let terminal = isatty(2) == 1
    private(set) var captioned = 0
    private(set) var failed = 0
    var skipped = 0
    var otherShard = 0

    func count(failed isFailure: Bool) {
        if isFailure { failed += 1 } else { captioned += 1 }
        let now = ContinuousClock.now
        guard now - last >= (terminal ? .milliseconds(200) : .seconds(10)) else { return }
        last = now
        let line = "lightcap: \(status())"
        FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
    }

    func summary(resumeFile: String?, shard: Shard?) {
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        var parts = [status()]
        if let resumeFile { parts.append("\(skipped) already in \(resumeFile)") }
        if let shard { parts.append("\(otherShard) in shards other than \(shard.index)/\(shard.count)") }
        printError("lightcap: done: " + parts.joined(separator: "; "))
    }

    private func status() -> String {
        let seconds = (ContinuousClock.now - start).seconds
        let images = captioned + failed
        return String(format: "%d images (%d failed) in %.1f s, %.1f img/s", images, failed, seconds,
                      seconds > 0 ? Double(images) / seconds : 0)
    }
}
