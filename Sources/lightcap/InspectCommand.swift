// `lightcap inspect MODEL`: what a model directory holds: its configuration, parameters per
// part, file sizes and dtypes, checked by loading it strictly.

import ArgumentParser
import Foundation
import LightCapFiles
import LightCap
import LightCapCore

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a model directory: configuration, parameters per part, file size, dtypes.",
        discussion: "Example: lightcap inspect models/default")

    @Argument(help: ArgumentHelp("Model directory (default: as for caption).", valueName: "model"))
    var directory: String?

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    @Flag(name: .long, help: "Skip the strict load check (only read the files).")
    var noLoad = false

    func run() throws {
        var options = ModelOptions()
        options.model = directory
        let url = try options.modelDirectory()
        let dir = try ModelDirectory(url: url)
        let file = try SafetensorsFile(url: dir.weightsURL)
        var parts: [String: Int] = [:]
        var dtypes: [String: Int] = [:]
        for e in file.entries.values {
            parts[Self.part(of: e.name), default: 0] += Tensor.elementCount(e.shape)
            dtypes[e.dtype.rawValue, default: 0] += 1
        }
        let total = parts.values.reduce(0, +)
        let fm = FileManager.default
        func size(_ u: URL) -> Int { (try? fm.attributesOfItem(atPath: u.path)[.size] as? Int) ?? 0 }
        let files = [dir.configURL, dir.weightsURL, dir.vocabURL, dir.conceptsURL].map { ($0.lastPathComponent, size($0)) }
        let concepts = try dir.conceptNames().count
        var loadCheck = "skipped"
        if !noLoad {
            do {
                _ = try Captioner(modelDirectory: url, threads: 1)
                loadCheck = "ok (strict: every tensor present, shaped and used)"
            } catch {
                loadCheck = "FAILED: \(error)"
            }
        }
        let configData = try FileContents.read(dir.configURL)
        let configObject = try JSONSerialization.jsonObject(with: configData)

        if json {
            let object: [String: Any] = [
                "path": url.path, "config": configObject, "parameters": parts.merging(["total": total]) { $1 },
                "dtypes": dtypes, "files": Dictionary(uniqueKeysWithValues: files), "tensors": file.entries.count,
                "concepts": concepts, "load": loadCheck,
            ]
            let out = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: out, as: UTF8.self))
            if loadCheck.hasPrefix("FAILED") { throw ExitCode(1) }
            return
        }
        let c = dir.configuration
        print("model       \(url.path)")
        print("name        \(c.name) (format_version \(c.formatVersion))")
        print("image       \(c.image.size)x\(c.image.size)")
        // An INT8 trunk (lightcap quantize): how many of its convolutions hold INT8 weights.
        let int8 = c.visual.quantization == "int8"
            ? ", INT8 trunk: \(file.entries.keys.filter { $0.hasPrefix("visual.") && $0.hasSuffix(".input_scale") }.count) INT8 convolutions"
            : ""
        print("visual      ModifiedResNet layers \(c.visual.layers), width \(c.visual.width) -> grid \(c.gridSide)x\(c.gridSide)x\(c.gridChannels)\(int8)")
        print("concepts    " + (c.concepts.enabled ? "\(concepts) concepts, top \(c.concepts.topK), windows \(c.concepts.windows)" : "off"))
        print("modulator   \(c.modulator.enabled ? "hidden \(c.modulator.hiddenDim)" : "off")")
        print("fusion      \(c.fusion.numHiddenLayers) layers, hidden \(c.fusion.hiddenSize), \(c.fusion.numAttentionHeads) heads, FFN \(c.fusion.intermediateSize), vocab \(c.fusion.vocabSize)")
        print("heads       \(c.heads.count)")
        print("decoding    beam \(c.decoding.beamSize), max \(c.decoding.maxLength) tokens")
        print("parameters")
        for (name, n) in parts.sorted(by: { $0.key < $1.key }) {
            print("  " + name.padding(toLength: 20, withPad: " ", startingAt: 0)
                  + String(format: " %12d  %5.1f%%", n, 100 * Double(n) / Double(max(total, 1))))
        }
        print("  " + "total".padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: " %12d", total))
        print("dtypes      " + dtypes.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", ") + " (\(file.entries.count) tensors)")
        print("files       " + files.map { "\($0.0) \(String(format: "%.1f MB", Double($0.1) / 1e6))" }.joined(separator: ", "))
        print("load        \(loadCheck)")
        if loadCheck.hasPrefix("FAILED") { throw ExitCode(1) }
    }

    /// The part a tensor belongs to: its first name component (bert: the first two).
    static func part(of name: String) -> String {
        let comps = name.split(separator: ".")
        guard let first = comps.first else { return name }
        if first == "bert", comps.count > 1 { return "bert.\(comps[1])" }
        return String(first)
    }
}
