// Options shared by the subcommands that load a model.

import ArgumentParser
import Foundation
import LightCap
import LightCapCore

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Model directory (config.json, model.safetensors, vocab.txt, concepts.txt).",
                                            discussion: "Default: $LIGHTCAP_MODEL, else models/default of this package.",
                                            valueName: "dir"))
    var model: String?

    @Option(name: .long, help: "Threads for the kernels (oneDNN).")
    var threads: Int = 1

    @Option(name: .long, help: ArgumentHelp(
        "Which kernels compute the backbone's convolutions: exact (direct convolution, LightCap's kernel where faster, else oneDNN's), onednn (exact, oneDNN's kernels only, for comparisons), lightcap-winograd (LightCap's Winograd F(4x4, 3x3) and F(2x2, 3x3), faster on large models), onednn-winograd (oneDNN's Winograd, AVX-512 only; else exact) or onednn-auto.",
        valueName: "kind"))
    var convolutions: ConvolutionPolicy = .exact

    @Option(name: .customLong("fusion-weights"), help: ArgumentHelp(
        "What the fusion layers read at each decoding step: f32 (exact) or int8 (weight-only INT8 per output row, a quarter of the bytes, faster; captions may differ: docs/DECODING.md gives the quality budget).",
        valueName: "kind"))
    var fusionWeights: FusionWeights = .f32

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// The model directory: --model, $LIGHTCAP_MODEL, models/default in the current directory,
    /// beside the executable's package, or in this source tree.
    func modelDirectory() throws -> URL {
        if let model { return try checked(URL(fileURLWithPath: model)) }
        if let found = defaultModelDirectory() { return try checked(found) }
        // A source checkout run by `swift run` from elsewhere: this package's models/default.
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/default")
        if FileManager.default.fileExists(atPath: source.appendingPathComponent("config.json").path) { return source }
        throw CLIError.modelNotFound(URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("models/default").path)
    }

    private func checked(_ url: URL) throws -> URL {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue,
              FileManager.default.fileExists(atPath: url.appendingPathComponent("config.json").path) else {
            throw CLIError.modelNotFound(url.path)
        }
        return url
    }

    func loadCaptioner() throws -> Captioner {
        try Captioner(modelDirectory: try modelDirectory(), threads: threads, convolutions: convolutions, fusionWeights: fusionWeights)
    }
}

struct DecodingFlags: ParsableArguments {
    @Option(name: .long, help: "Beam width (1 = greedy). Default: the model's decoding.beam_size.")
    var beam: Int?

    @Option(name: .long, help: "Most tokens in a caption. Default: the model's decoding.max_length.")
    var maxLength: Int?

    func validate() throws {
        if let beam, beam < 1 { throw ValidationError("--beam must be at least 1, got \(beam)") }
        if let maxLength, maxLength < 1 { throw ValidationError("--max-length must be at least 1, got \(maxLength)") }
    }

    /// The flags over the model's defaults, checked against the model.
    func options(for captioner: Captioner) throws -> DecodingOptions {
        let d = captioner.configuration.decoding
        let options = DecodingOptions(beamSize: beam ?? d.beamSize, maxLength: maxLength ?? d.maxLength)
        do { try captioner.validate(options) } catch { throw ValidationError("\(error)") }
        return options
    }
}

/// The default model directory: `$LIGHTCAP_MODEL` if set, else the first `models/default`
/// found in the current directory or a folder above the executable (nil when none exists).
/// Lives in the command line, not the library, because it reads the executable's own path.
func defaultModelDirectory() -> URL? {
    let fm = FileManager.default
    if let env = ProcessInfo.processInfo.environment["LIGHTCAP_MODEL"], !env.isEmpty {
        return URL(fileURLWithPath: env)
    }
    var candidates = [URL(fileURLWithPath: fm.currentDirectoryPath)]
    var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<8 {
        candidates.append(dir)
        dir = dir.deletingLastPathComponent()
    }
    for base in candidates {
        let model = base.appendingPathComponent("models/default")
        if fm.fileExists(atPath: model.appendingPathComponent("config.json").path) { return model }
    }
    return nil
}

/// Writes to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

extension ConvolutionPolicy: ExpressibleByArgument {}
extension FusionWeights: ExpressibleByArgument {}
