// `lightcap caption PATH...`: caption image files, folders of images, or paths read from
// standard input ("-"), as text, JSON or JSON lines, optionally writing image.txt sidecars.
// `--stream` makes it a pipeline stage instead (StreamMode.swift).

import ArgumentParser
import Foundation
import LightCap

struct CaptionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caption",
        abstract: "Caption images (files, folders, or '-' for paths on standard input).",
        discussion: """
            Prints one caption per image. A file that cannot be captioned prints its error on standard \
            error and the others go on; the exit status is 1 if any failed.
            With --stream (for Spark's RDD.pipe, Hadoop Streaming, Ray Data): reads lines from standard \
            input, each a path or a JSON record {"id", "path"} or {"id", "image_base64"}, and writes one \
            JSON line per input line in the same order, flushed per line: {"id", "path", "caption", \
            "score", "concepts", "timings"}, or {"id", "error"} when that input failed; the exit status \
            stays 0 when only inputs failed. See docs/SCALE.md.
            Examples:
              lightcap caption examples/
              find photos -name '*.jpg' | lightcap caption - --format jsonl
              lightcap caption photos/ --sidecar txt
              find photos -name '*.jpg' | lightcap caption --stream --shard 0/4 --resume out0.jsonl
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json, jsonl }
    enum Sidecar: String, ExpressibleByArgument, CaseIterable { case txt }

    @Argument(help: ArgumentHelp("Image files, folders (searched for .jpg .jpeg .png .webp), or '-'.", valueName: "path"))
    var paths: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "Output format: text, json (one array) or jsonl (one object a line). Default: text; --stream writes jsonl.",
        valueName: "format"))
    var format: Format?

    @Option(name: .long, help: "Also write each caption beside its image: 'txt' writes photo.txt for photo.jpg.")
    var sidecar: Sidecar?

    @Flag(name: .long, help: "Let --sidecar replace existing files (never done otherwise).")
    var overwrite = false

    @Option(name: .long, help: ArgumentHelp(
        "Images captioned together: greedy decoding runs their steps through the fusion model at once (faster; the same captions). 1: one at a time. Default: 8.",
        valueName: "n"))
    var batch: Int?

    @Flag(name: .long, help: ArgumentHelp(
        "Pipeline mode: one JSON line per input line (a path or a JSON record), in order, flushed per line; failures as {\"id\", \"error\"} records."))
    var stream = false

    @Option(name: .long, help: ArgumentHelp(
        "With --stream: caption only shard K of N (0 <= K < N), chosen by a stable hash of each path; other inputs are left out.",
        valueName: "K/N"))
    var shard: String?

    @Option(name: .long, help: ArgumentHelp(
        "With --stream: append the records to FILE instead of standard output, skipping the inputs whose id FILE already holds.",
        valueName: "file"))
    var resume: String?

    @Option(name: .customLong("max-image-mb"), help: ArgumentHelp(
        "With --stream: largest image_base64 image in MiB, checked before decoding. Default: 32.", valueName: "mib"))
    var maxImageMB: Double?

    @OptionGroup var model: ModelOptions
    @OptionGroup var decoding: DecodingFlags

    func validate() throws {
        if overwrite && sidecar == nil { throw ValidationError("--overwrite only applies with --sidecar") }
        if let batch, !(1...256).contains(batch) { throw ValidationError("--batch must lie in 1...256, got \(batch)") }
        if stream { return try validateStream() }
        if paths.isEmpty { throw ValidationError("give at least one image, folder, or '-'") }
        for (flag, given) in [("--shard", shard != nil), ("--resume", resume != nil), ("--max-image-mb", maxImageMB != nil)]
        where given {
            throw ValidationError("\(flag) only applies with --stream")
        }
    }

    /// One output record (the JSON keys); `path` is absent only from --stream's image_base64 records.
    struct Record: Encodable {
        var path: String?
        var caption: String
        var score: Double
        var concepts: [ConceptScore]
        var timings: [String: Double]

        init(path: String?, caption c: Caption) {
            self.path = path
            caption = c.text
            score = c.score
            concepts = c.concepts
            timings = c.timings
        }
    }

    func run() throws {
        if stream { return try runStream() }
        let files = try ImageInputs.expand(paths)
        guard !files.isEmpty else { throw CLIError.noImages(paths) }
        let captioner = try model.loadCaptioner()
        let options = try decoding.options(for: captioner)
        let failures = try Self.captionAll(files, session: try captioner.makeSession(), options: options, batch: batch ?? 8,
                                           format: format ?? .text, sidecar: sidecar != nil, overwrite: overwrite)
        if failures > 0 {
            printError("lightcap: \(failures) of \(files.count) images failed")
            throw ExitCode(1)
        }
    }

    /// Captions `files` in order, `batch` at a time, printing as it goes; returns how many failed.
    static func captionAll(_ files: [String], session: CaptionSession, options: DecodingOptions, batch: Int, format: Format,
                           sidecar: Bool, overwrite: Bool) throws -> Int {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let progress = ProgressBar(total: files.count)
        var failures = 0
        var first = true
        if format == .json { print("[") }
        for start in stride(from: 0, to: files.count, by: max(batch, 1)) {
            let paths = Array(files[start..<min(start + max(batch, 1), files.count)])
            let results: [Result<Caption, any Error>]
            do {
                results = try session.captions(imagesAt: paths.map { URL(fileURLWithPath: $0) }, options: options)
            } catch {
                results = Array(repeating: .failure(error), count: paths.count)
            }
            for (path, result) in zip(paths, results) {
                do {
                    let c = try result.get()
                    let record = Record(path: path, caption: c)
                    progress.finish()
                    switch format {
                    case .text:
                        print(files.count == 1 ? c.text : "\(path): \(c.text)")
                    case .jsonl:
                        print(String(decoding: try encoder.encode(record), as: UTF8.self))
                    case .json:
                        print((first ? "  " : ", ") + String(decoding: try encoder.encode(record), as: UTF8.self))
                    }
                    first = false
                    if sidecar { try writeSidecar(for: path, caption: c.text, overwrite: overwrite) }
                } catch {
                    failures += 1
                    progress.finish()
                    printError("lightcap: \(path): \(error)")
                }
            }
            fflush(nil)  // flush stdout so each batch's lines show as they are made
            progress.update(start + paths.count, failed: failures)
        }
        progress.finish()
        if format == .json { print("]") }
        return failures
    }

    /// Writes photo.txt beside photo.jpg; an existing file is kept unless `overwrite`.
    static func writeSidecar(for path: String, caption: String, overwrite: Bool) throws {
        let url = URL(fileURLWithPath: path).deletingPathExtension().appendingPathExtension("txt")
        if FileManager.default.fileExists(atPath: url.path) && !overwrite {
            printError("lightcap: kept existing \(url.path) (pass --overwrite to replace it)")
            return
        }
        do { try Data((caption + "\n").utf8).write(to: url, options: .atomic) } catch {
            throw CLIError.unreadableFile(url.path, "cannot write: \((error as NSError).localizedDescription)")
        }
    }
}
