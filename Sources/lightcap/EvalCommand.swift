// `lightcap eval`: the COCO caption metrics (pycocoevalcap's names and numbers) of a results
// file, or of captions made here for a folder of images.

import ArgumentParser
import Foundation
import LightCap
import LightCapEval

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score captions against COCO-format references (BLEU, METEOR, ROUGE-L, CIDEr).",
        discussion: """
            BLEU-1..4, ROUGE-L and CIDEr-D equal pycocoevalcap 1.2 (with its PTB tokenization). METEOR runs \
            pycocoevalcap's jar through Java when both are found (LIGHTCAP_METEOR_JAR, or pycocoevalcap in \
            .venv); otherwise it is reported as unavailable. SPICE is not offered: it needs models that \
            pycocoevalcap downloads at run time.
            The images evaluated are those with a result, as in pycocoevalcap's example.
            Examples:
              lightcap eval --annotations captions_val.json --results results.json
              lightcap eval --annotations captions_val.json --images val2014/ --save-results results.json
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json }

    @Option(name: .long, help: ArgumentHelp("COCO captions annotation file ({images, annotations}).", valueName: "file"))
    var annotations: String

    @Option(name: .long, help: ArgumentHelp("COCO results file: [{image_id, caption}].", valueName: "file"))
    var results: String?

    @Option(name: .long, help: ArgumentHelp("Caption these images first (matched to the annotations' file_name, or an id equal to the file name's stem).", valueName: "dir"))
    var images: String?

    @Option(name: .long, help: ArgumentHelp("With --images: also write the captions as a COCO results file.", valueName: "file"))
    var saveResults: String?

    @Option(name: .long, help: "Output: text (pycocoevalcap's 'name: value' lines) or json (one object keyed by metric).")
    var format: Format = .text

    @Flag(name: .long, help: "Skip METEOR (Java) even when it is available.")
    var noMeteor = false

    @Flag(name: .long, help: "Also print each image's scores (json: under \"per_image\").")
    var perImage = false

    @OptionGroup var model: ModelOptions
    @OptionGroup var decoding: DecodingFlags

    func validate() throws {
        if (results == nil) == (images == nil) { throw ValidationError("give exactly one of --results FILE or --images DIR") }
        if saveResults != nil && images == nil { throw ValidationError("--save-results only applies with --images") }
    }

    func run() throws {
        let refs = try CaptionReferences.load(cocoAnnotations: URL(fileURLWithPath: annotations))
        let res: [String: String]
        if let results {
            res = try CaptionReferences.loadResults(URL(fileURLWithPath: results))
        } else {
            res = try captionImages(in: images!, references: refs)
        }
        let report = try CaptionEvaluator(meteor: !noMeteor).evaluate(references: refs, results: res)
        print(Self.render(report, format: format, perImage: perImage))
    }

    /// Captions the folder's images that the annotations name; returns image id -> caption.
    func captionImages(in folder: String, references: CaptionReferences) throws -> [String: String] {
        let files = try ImageInputs.expand([folder])
        let byName = try Self.fileNames(annotations: URL(fileURLWithPath: annotations))
        var wanted: [(id: String, path: String)] = []
        for path in files {
            let name = (path as NSString).lastPathComponent
            let stem = (name as NSString).deletingPathExtension
            if let id = byName[name] {
                wanted.append((id, path))
            } else if references.captions[stem] != nil {
                wanted.append((stem, path))
            }
        }
        guard !wanted.isEmpty else {
            throw CLIError.badUse("none of the \(files.count) images in \(folder) is named by \(annotations) (by file_name or id)")
        }
        let captioner = try model.loadCaptioner()
        let options = try decoding.options(for: captioner)
        let session = try captioner.makeSession()
        let progress = ProgressBar(total: wanted.count)
        var out: [String: String] = [:]
        var failed = 0
        for (i, w) in wanted.enumerated() {
            do { out[w.id] = try session.caption(imageAt: URL(fileURLWithPath: w.path), options: options).text } catch {
                failed += 1
                progress.finish()
                printError("lightcap: \(w.path): \(error)")
            }
            progress.update(i + 1, failed: failed)
        }
        progress.finish()
        if failed > 0 { printError("lightcap: \(failed) images failed and are left out of the scores") }
        if let saveResults {
            let list = wanted.compactMap { w in out[w.id].map { ["image_id": Self.jsonID(w.id), "caption": $0] } }
            let data = try JSONSerialization.data(withJSONObject: list, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            try data.write(to: URL(fileURLWithPath: saveResults))
        }
        return out
    }

    static func jsonID(_ id: String) -> Any { Int(id).map { $0 as Any } ?? id }

    static func fileNames(annotations url: URL) throws -> [String: String] {
        guard let data = FileManager.default.contents(atPath: url.path),
              let dict = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        var out: [String: String] = [:]
        for img in dict["images"] as? [[String: Any]] ?? [] {
            guard let name = img["file_name"] as? String else { continue }
            switch img["id"] {
            case let s as String: out[name] = s
            case let n as NSNumber: out[name] = n.stringValue
            default: continue
            }
        }
        return out
    }

    static func render(_ report: EvaluationReport, format: Format, perImage: Bool) -> String {
        switch format {
        case .text:
            var lines = ["images: \(report.imageIDs.count)"]
            lines += report.scores.map { String(format: "%@: %.3f", $0.name, $0.value) }
            lines += report.unavailable.map { "\($0.name): unavailable (\($0.reason))" }
            if perImage {
                let names = report.scores.map(\.name)
                lines.append("image_id " + names.joined(separator: " "))
                for (i, id) in report.imageIDs.enumerated() {
                    lines.append(id + " " + names.map { String(format: "%.4f", report.perImage[$0]![i]) }.joined(separator: " "))
                }
            }
            return lines.joined(separator: "\n")
        case .json:
            var object: [String: Any] = [:]
            for s in report.scores { object[s.name] = s.value }
            object["images"] = report.imageIDs.count
            object["unavailable"] = Dictionary(uniqueKeysWithValues: report.unavailable.map { ($0.name, $0.reason) })
            if perImage {
                object["per_image"] = report.imageIDs.enumerated().map { i, id -> [String: Any] in
                    var row: [String: Any] = ["image_id": jsonID(id)]
                    for s in report.scores { row[s.name] = report.perImage[s.name]![i] }
                    return row
                }
            }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
    }
}
