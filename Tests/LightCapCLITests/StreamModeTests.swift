import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// `lightcap caption --stream` (docs/SCALE.md) with the committed model (models/default) on the
// example scenes: one record per input line in input order, failures as records, a record
// written before the next line is read, the image_base64 size limit, sharding by a stable hash,
// and resuming an output file after the process was killed.

final class StreamModeTests: LightCapCLITestCase {
    var model: String { Self.packageRoot.appendingPathComponent("models/default").path }

    func example(_ i: Int) -> String { Self.packageRoot.appendingPathComponent("examples/scene\(i).png").path }

    /// A scratch folder, removed after the test.
    func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-stream-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// `count` image paths in a scratch folder (links to the three examples, in turn).
    func manyImages(_ count: Int) throws -> [String] {
        let dir = try scratch()
        return try (0..<count).map { i in
            let link = dir.appendingPathComponent(String(format: "img%04d.png", i))
            try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: example(i % 3 + 1))
            return link.path
        }
    }

    func objects(_ jsonLines: String) throws -> [[String: Any]] {
        try jsonLines.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], String($0))
        }
    }

    /// A record without its timings (the only field that differs between two runs).
    func stable(_ record: [String: Any], dropping keys: [String] = []) -> NSDictionary {
        var r = record
        for key in ["timings"] + keys { r[key] = nil }
        return NSDictionary(dictionary: r)
    }

    func stream(_ extra: [String] = [], stdin: String) throws -> Run {
        try lightcap(["caption", "--stream", "--model", model] + extra, stdin: stdin)
    }

    // MARK: one record per line

    func testOneRecordPerInputLineInOrderWithFailuresAsRecords() throws {
        let dir = try scratch()
        let broken = dir.appendingPathComponent("broken.png")
        try Data("not an image".utf8).write(to: broken)
        let base64 = try Data(contentsOf: URL(fileURLWithPath: example(3))).base64EncodedString()
        let lines = [
            example(1),
            "/no/such/image.png",
            broken.path,
            "",
            "{not json",
            #"{"id": 7, "path": "\#(example(2))", "width": 256}"#,
            #"{"id": "b64", "image_base64": "\#(base64)"}"#,
            #"{"id": "bad64", "image_base64": "@@@@"}"#,
            #"{"id": "nothing"}"#,
            #"{"image_base64": "AAAA"}"#,
            #"{"id": {"a": 1}, "path": "x.png"}"#,
            "  \(example(3))\r",
            #"{"id": "both", "path": "a.png", "image_base64": "AAAA"}"#,
        ]
        let r = try stream(stdin: lines.joined(separator: "\n") + "\n")
        XCTAssertEqual(r.status, 0, "only inputs failed: the exit status stays 0\n\(r.stderr)")
        let records = try objects(r.stdout)
        XCTAssertEqual(records.count, lines.count, r.stdout)
        guard records.count == lines.count else { return }

        // Ids, in input order: the path for path lines, the record's id, null (with the line
        // number) when the line has none.
        func idText(_ id: Any?) -> String {
            if let s = id as? String { return s }
            if let i = id as? Int { return "#\(i)" }
            return id is NSNull ? "null" : "?"
        }
        XCTAssertEqual(records.map { idText($0["id"]) },
                       [example(1), "/no/such/image.png", broken.path, "null", "null", "#7", "b64", "bad64", "nothing",
                        "null", "null", example(3), "both"])
        for (i, record) in records.enumerated() where record["id"] is NSNull {
            XCTAssertEqual(record["line"] as? Int, i + 1)
        }
        let failed = records.indices.filter { records[$0]["error"] != nil }
        XCTAssertEqual(failed, [1, 2, 3, 4, 7, 8, 9, 10, 12])
        for i in failed { XCTAssertNil(records[i]["caption"], "\(records[i])") }
        XCTAssert((records[1]["error"] as? String)?.contains("/no/such/image.png") == true)
        XCTAssert((records[7]["error"] as? String)?.contains("base64") == true)
        XCTAssert((records[8]["error"] as? String)?.contains("image_base64") == true)
        XCTAssert((records[9]["error"] as? String)?.contains("needs an id") == true)
        XCTAssert((records[12]["error"] as? String)?.contains("not both") == true)

        // The captions equal those of `--format jsonl` one at a time on the same files (in
        // batches the scores may differ in the last bits); the base64 image is captioned as its
        // file is.
        let plain = try objects(lightcap(["caption", example(1), example(2), example(3), "--format", "jsonl",
                                          "--model", model, "--batch", "1"]).stdout)
        XCTAssertEqual(plain.count, 3)
        XCTAssertEqual(stable(records[0], dropping: ["id"]), stable(plain[0]))
        XCTAssertEqual(stable(records[5], dropping: ["id"]), stable(plain[1]))
        XCTAssertEqual(stable(records[6], dropping: ["id"]), stable(plain[2], dropping: ["path"]))
        XCTAssertEqual(stable(records[11], dropping: ["id"]), stable(plain[2]))
        XCTAssert(r.stderr.contains("img/s"), r.stderr)
    }

    func testFolderArgumentsGiveOneRecordPerImage() throws {
        let paths = try manyImages(4)
        let folder = (paths[0] as NSString).deletingLastPathComponent
        let r = try lightcap(["caption", "--stream", folder, "--model", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try objects(r.stdout).map { $0["id"] as? String }, paths)
    }

    func testEachRecordIsWrittenBeforeTheNextLineIsRead() throws {
        let (p, stdin, stdout, stderr) = try process(["caption", "--stream", "--model", model])
        try p.run()
        let out = PipeReader(stdout.fileHandleForReading)
        let err = PipeReader(stderr.fileHandleForReading)
        defer { if p.isRunning { p.terminate() } }
        for i in [2, 1, 3] {
            try stdin.fileHandleForWriting.write(contentsOf: Data((example(i) + "\n").utf8))
            // Standard input stays open: the record must come without more input.
            let line = try XCTUnwrap(out.nextLine(timeout: 120), "no record for line \(i) while the input stays open")
            let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            XCTAssertEqual(record["id"] as? String, example(i))
            XCTAssertNotNil(record["caption"] as? String)
        }
        try stdin.fileHandleForWriting.close()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, String(decoding: err.readToEnd(), as: UTF8.self))
        XCTAssertNil(out.nextLine(timeout: 10))
    }

    func testOversizedInputsAreRefusedBeforeDecoding() throws {
        let base64 = try Data(contentsOf: URL(fileURLWithPath: example(1))).base64EncodedString()  // 130 kB
        let lines = [
            #"{"id": "big", "image_base64": "\#(base64)"}"#,
            String(repeating: "x", count: 300_000),  // longer than any line --max-image-mb 0.05 allows
            example(2),
        ]
        let r = try stream(["--max-image-mb", "0.05"], stdin: lines.joined(separator: "\n") + "\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        let records = try objects(r.stdout)
        XCTAssertEqual(records.count, 3)
        guard records.count == 3 else { return }
        XCTAssertEqual(records[0]["id"] as? String, "big")
        XCTAssert((records[0]["error"] as? String)?.contains("--max-image-mb") == true, "\(records[0])")
        XCTAssert(records[1]["id"] is NSNull)
        XCTAssert((records[1]["error"] as? String)?.contains("too long (300000 bytes)") == true, "\(records[1])")
        XCTAssertNotNil(records[2]["caption"] as? String)
        // The same image within the default limit is captioned.
        let ok = try objects(stream(stdin: lines[0] + "\n").stdout)
        XCTAssertNotNil(ok.first?["caption"] as? String)
    }

    // MARK: shards

    func testShardsPartitionTheInputsByAStableHashOfThePath() throws {
        // Missing files fail fast and still give records, so many inputs cost little.
        let paths = (0..<60).map { "/no/such/folder/img\($0).jpg" }
        let input = paths.joined(separator: "\n") + "\n"
        let whole = try objects(stream(stdin: input).stdout)
        XCTAssertEqual(whole.count, paths.count)
        var seen: [String] = []
        for k in 0..<4 {
            let r = try stream(["--shard", "\(k)/4"], stdin: input)
            XCTAssertEqual(r.status, 0, r.stderr)
            let part = try objects(r.stdout)
            XCTAssertFalse(part.isEmpty, "shard \(k)/4 of 60 inputs is empty")
            let ids = part.map { $0["id"] as! String }
            XCTAssertEqual(ids, paths.filter { ids.contains($0) }, "a shard keeps the input order")
            for record in part {
                let i = paths.firstIndex(of: record["id"] as! String)!
                XCTAssertEqual(stable(record), stable(whole[i]))
            }
            seen += ids
            XCTAssert(r.stderr.contains("in shards other than \(k)/4"), r.stderr)
        }
        XCTAssertEqual(seen.sorted(), paths.sorted(), "every input in exactly one shard")

        // The assignment is FNV-1a 64 of the path, scaled to N (docs/SCALE.md gives it in Python):
        // pinned, so that shards made by another version or language line up.
        let pinned: [(String, Int)] = [("photos/000001.jpg", 4), ("photos/000002.jpg", 9), ("a.png", 10), ("/data/x/y.webp", 8)]
        for (path, shard) in pinned {
            for line in [path, #"{"id": 1, "path": "\#(path)"}"#] {
                let r = try stream(["--shard", "\(shard)/16"], stdin: line + "\n")
                XCTAssertEqual(try objects(r.stdout).count, 1, "\(line) is in shard \(shard)/16")
                let other = try stream(["--shard", "\((shard + 1) % 16)/16"], stdin: line + "\n")
                XCTAssertEqual(other.stdout, "", "\(line) is only in shard \(shard)/16")
            }
        }
    }

    // MARK: resume

    func testResumeAfterAKillAppendsTheRestOnce() throws {
        let paths = try manyImages(240)
        let input = paths.joined(separator: "\n") + "\n"
        let oneShot = try objects(stream(stdin: input).stdout)
        XCTAssertEqual(oneShot.count, paths.count)
        let out = try scratch().appendingPathComponent("captions.jsonl")

        // Kill the first run (SIGKILL: no chance to clean up) once some records are written.
        let (p, stdin, stdout, stderr) = try process(["caption", "--stream", "--model", model, "--resume", out.path])
        try p.run()
        let drainOut = PipeReader(stdout.fileHandleForReading), drainErr = PipeReader(stderr.fileHandleForReading)
        let writer = stdin.fileHandleForWriting
        DispatchQueue.global().async {
            try? writer.write(contentsOf: Data(input.utf8))
            try? writer.close()
        }
        let deadline = Date(timeIntervalSinceNow: 120)
        func written() -> Int { (try? String(contentsOf: out, encoding: .utf8))?.filter { $0 == "\n" }.count ?? 0 }
        while written() < 20 && p.isRunning && Date() < deadline { usleep(5_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        _ = (drainOut.readToEnd(), drainErr.readToEnd())
        let before = written()
        XCTAssertGreaterThanOrEqual(before, 20)
        XCTAssertLessThan(before, paths.count, "the run ended before it could be killed; the test needs more inputs")
        // What a kill in the middle of a write would leave: half a record, no newline.
        let handle = try FileHandle(forWritingTo: out)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"caption":"three shapes: a sm"#.utf8))
        try handle.close()

        let resumed = try stream(["--resume", out.path], stdin: input)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(resumed.stdout, "", "with --resume the records go to the file")
        XCTAssert(resumed.stderr.contains("torn last line"), resumed.stderr)
        XCTAssert(resumed.stderr.contains("\(before) records already there"), resumed.stderr)
        let final = try String(contentsOf: out, encoding: .utf8)
        let records = try objects(final)
        XCTAssertEqual(records.map { $0["id"] as? String }, paths, "each input exactly once, in order")
        XCTAssertEqual(records.map { stable($0) }, oneShot.map { stable($0) }, "the same records as one run")

        // Nothing left to do: the file stays as it is.
        let again = try stream(["--resume", out.path], stdin: input)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), final)
        XCTAssert(again.stderr.contains("\(paths.count) records already there"), again.stderr)

        // A whole last record that lost only its newline is kept, and the newline added.
        try Data(final.dropLast().utf8).write(to: out)
        let kept = try stream(["--resume", out.path], stdin: input)
        XCTAssertEqual(kept.status, 0, kept.stderr)
        XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), final)
    }

    func testResumeNeverAppendsToAFileThatIsNotItsOutput() throws {
        let out = try scratch().appendingPathComponent("notes.jsonl")
        let text = "some notes\n{\"id\": \"a\", \"caption\": \"x\"}\n"
        try Data(text.utf8).write(to: out)
        let r = try stream(["--resume", out.path], stdin: example(1) + "\n")
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("line 1"), r.stderr)
        XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), text)
    }

    // MARK: flags

    func testStreamFlagsAreCheckedBeforeAnyWork() throws {
        let cases: [([String], String)] = [
            (["--stream", "--shard", "3/3"], "--shard"),
            (["--stream", "--shard", "1"], "--shard"),
            (["--stream", "--shard", "a/b"], "--shard"),
            (["--stream", "--format", "text"], "--format"),
            (["--stream", "--sidecar", "txt"], "--sidecar"),
            (["--stream", "--max-image-mb", "0"], "--max-image-mb"),
            (["--stream", "-", "x.png"], "'-'"),
            (["x.png", "--shard", "0/2"], "--shard"),
            (["x.png", "--resume", "out.jsonl"], "--resume"),
        ]
        for (args, flag) in cases {
            let r = try lightcap(["caption"] + args)
            XCTAssertEqual(r.status, 64, "\(args)")
            XCTAssert(r.stderr.contains(flag), "\(args): \(r.stderr)")
        }
    }
}
