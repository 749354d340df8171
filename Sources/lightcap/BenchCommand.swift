// `lightcap bench caption|visual|int8-convolutions|image|decode|eval`: the benchmarks (LightCapBench). Benchmarks
// are not tests: their numbers depend on the machine and its load. The scripts/bench_*.py peers
// run them beside PyTorch, ONNX Runtime, Pillow or pycocoevalcap in the same run.

import ArgumentParser
import Foundation
import LightCap
import LightCapBench
import LightCapCore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: caption stages, the visual backbone, image decoding, caption decoding, metrics.",
        subcommands: [Caption.self, Visual.self, Int8Convolutions.self, Image.self, Decode.self, Eval.self],
        defaultSubcommand: Caption.self)

    /// Prints `value` as JSON (sorted keys).
    static func printJSON<T: Encodable>(_ value: T, pretty: Bool = true) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    struct Caption: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time each stage of captioning (warm-up, then median and p90 over runs).",
            discussion: """
                Without --image, a synthetic 640x480 image is captioned (no decode stage). With
                --batch N each run captions N copies as one batch (greedy decoding runs them
                through the fusion model together); "per image" is the run's total over N.
                Example: lightcap bench caption --image examples/scene1.png --runs 50 --threads 2
                """)

        @Option(name: .long, help: ArgumentHelp("Image file to caption (JPEG, PNG, WebP).", valueName: "file"))
        var image: String?

        @Option(name: .long, help: "Timed runs.")
        var runs: Int = 20

        @Option(name: .long, help: "Untimed warm-up runs.")
        var warmup: Int = 3

        @Option(name: .long, help: "Images captioned as one batch in each run.")
        var batch: Int = 1

        @Flag(name: .long, help: "Print one JSON object instead of a table.")
        var json = false

        @OptionGroup var model: ModelOptions
        @OptionGroup var decoding: DecodingFlags

        func validate() throws {
            guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
            guard warmup >= 0 else { throw ValidationError("--warmup must be 0 or more") }
            guard (1...1024).contains(batch) else { throw ValidationError("--batch must be in 1...1024") }
        }

        func run() throws {
            var captioner: Captioner?
            let loadMs = try Clock.time { captioner = try model.loadCaptioner() }
            let options = try decoding.options(for: captioner!)
            var data: Data?
            if let image {
                guard let d = FileManager.default.contents(atPath: image) else { throw CLIError.noSuchPath(image) }
                data = d
            }
            let report = try CaptionBenchmark.run(captioner!, imageData: data, options: options, runs: runs, warmup: warmup,
                                                 batch: batch)
            let directory = captioner!.modelDirectory
            let weights = try ModelDirectory(url: directory).weightsURL
            let bytes = (try? FileManager.default.attributesOfItem(atPath: weights.path)[.size] as? Int) ?? 0
            let params = try SafetensorsFile(url: weights).parameterCount
            let decodingName = options.beamSize == 1 ? "greedy" : "beam \(options.beamSize)"
            let imageName = image ?? "synthetic 640x480"
            if json {
                struct Output: Encodable {
                    var model: String, threads: Int, runs: Int, warmup: Int, batch: Int, decoding: String, max_length: Int
                    var convolutions: String, fusion_weights: String
                    var load_ms: Double, model_bytes: Int, parameters: Int, caption: String, image: String
                    var stages: [String: CaptionBenchmark.Stage]
                }
                try BenchCommand.printJSON(Output(
                    model: directory.path, threads: model.threads, runs: runs, warmup: warmup, batch: batch, decoding: decodingName,
                    max_length: options.maxLength, convolutions: model.convolutions.rawValue,
                    fusion_weights: model.fusionWeights.rawValue, load_ms: loadMs, model_bytes: bytes, parameters: params,
                    caption: report.caption, image: imageName,
                    stages: Dictionary(report.stages.map { ($0.name, $0.summary) }, uniquingKeysWith: { a, _ in a })))
                return
            }
            print("model      \(directory.path) (\(captioner!.configuration.name), \(String(format: "%.1f MB", Double(bytes) / 1e6)), \(params) parameters)")
            print("image      \(imageName)")
            print("decoding   \(decodingName), max \(options.maxLength) tokens; threads \(model.threads); batch \(batch); \(warmup) warm-up + \(runs) runs")
            print("kernels    convolutions \(model.convolutions.rawValue); fusion weights \(model.fusionWeights.rawValue)")
            print(String(format: "load       %.1f ms", loadMs))
            print("caption    \(report.caption)")
            print("stage          median ms     p90 ms")
            for (name, s) in report.stages {
                print(BenchCommand.pad(name, 12) + String(format: " %10.2f %10.2f", s.medianMs, s.p90Ms))
            }
        }
    }

    struct Visual: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time the CLIP ResNet trunk (base, 224) on random or given weights.",
            discussion: """
                Default: load times, then the median forward per convolution policy and thread count with \
                GFLOPS and the fraction of the measured FMA peak, and the peak resident memory.
                --profile: the time of every op inside the network on the first --threads count.
                --memory: only load and run --runs times on 1 thread; prints load time and peak resident memory.
                scripts/bench_visual.py runs it beside PyTorch and ONNX Runtime.
                """)

        @Option(name: .long, help: ArgumentHelp("Folded visual.* weights (safetensors); default: random base weights.", valueName: "file"))
        var weights: String?

        @Flag(name: .long, help: "--weights holds an INT8 trunk (the model.safetensors of lightcap quantize).")
        var int8 = false

        @Option(name: .long, help: ArgumentHelp("Thread counts, comma-separated.", valueName: "n,n"))
        var threads: String = "1,2"

        @Option(name: .long, help: ArgumentHelp("Convolution policies, comma-separated (as lightcap caption --convolutions).", valueName: "kind,kind"))
        var policies: String?

        @Option(name: .long, help: "Timed forwards per row.")
        var iterations: Int = 20

        @Option(name: .long, help: "Untimed forwards first.")
        var warmup: Int = 3

        @Flag(name: .long, help: "Print JSON.")
        var json = false

        @Flag(name: .long, help: "Only load and run on 1 thread, then print the load time and the peak resident memory.")
        var memory = false

        @Option(name: .long, help: "With --memory: forwards to run.")
        var runs: Int = 2

        @Flag(name: .long, help: "The time of every op inside the network.")
        var profile = false

        func options() throws -> VisualBenchmark.Options {
            var o = VisualBenchmark.Options()
            o.weights = weights.map { URL(fileURLWithPath: $0) }
            if int8 {
                guard weights != nil else { throw ValidationError("--int8 needs --weights (an INT8 trunk has no random twin)") }
                o.configuration.visual.quantization = "int8"
            }
            o.threads = try threads.split(separator: ",").map {
                guard let n = Int($0), n >= 1 else { throw ValidationError("--threads: '\($0)' is not a positive integer") }
                return n
            }
            if let policies {
                o.policies = try policies.split(separator: ",").map {
                    guard let a = ConvolutionPolicy(rawValue: String($0)) else {
                        throw ValidationError("--policies: unknown '\($0)' (\(ConvolutionPolicy.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    return a
                }
            }
            guard iterations >= 1, warmup >= 0, runs >= 1 else { throw ValidationError("--iterations and --runs must be at least 1, --warmup 0 or more") }
            o.iterations = iterations
            o.warmup = warmup
            return o
        }

        func run() throws {
            let options = try options()
            if memory {
                guard options.weights != nil else { throw ValidationError("--memory needs --weights (scripts/bench_visual.py writes them)") }
                try BenchCommand.printJSON(try VisualBenchmark.memory(options, runs: runs), pretty: false)
                return
            }
            if profile { return try printProfile(options) }
            let report = try VisualBenchmark.run(options) { if !json { print($0) } }
            if json { return try BenchCommand.printJSON(report) }
            print(String(format: "convolutions: %.2f GFLOP; packed weights %.1f MB; FMA peak probe: %@", report.convolutionGflop, report.packedWeightMB, report.fmaISA))
            print(String(format: "load: first %.1f ms; median of 3: %@", report.firstLoadMs,
                         report.loadMs.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f ms", $0.key, $0.value) }.joined(separator: ", ")))
            print(String(format: "resident memory: %.1f MB before load, peak %.1f MB", report.rssBeforeMB, report.peakRSSMB))
            print("wall clock: median of the runs, peak by wall clock; CPU: process CPU time per run, peak by CPU time")
            print("policy             threads  median ms  GFLOPS  % peak  |  CPU ms  GFLOPS  % peak  |  rel. error vs exact")
            for r in report.rows {
                print(String(format: "%-17@  %7d  %9.2f  %6.1f  %5.1f%%  |  %6.2f  %6.1f  %5.1f%%  |  %.2e", r.policy, r.threads,
                             r.medianMs, r.gflops, 100 * r.fractionOfPeak, r.cpuMs, r.cpuGflops, 100 * r.cpuGflops / max(r.cpuPeakGflops, 1e-9),
                             r.relativeErrorVsExact))
            }
        }

        private func printProfile(_ options: VisualBenchmark.Options) throws {
            let threads = options.threads.first ?? 1
            let peak = PeakFLOPS.measure(threads: threads).wallGflops
            let profiles = try VisualBenchmark.profile(options) { if !json { print($0) } }
            if json { return try BenchCommand.printJSON(profiles) }
            let pad = BenchCommand.pad
            print(String(format: "FMA peak %.1f GFLOPS on %d thread(s); median of %d runs per op", peak, threads, options.iterations))
            for policy in options.policies.map(\.rawValue) {
                guard let ops = profiles[policy] else { continue }
                print("\n\(policy)\n" + pad("op", 26) + " " + pad("implementation", 28) + "      ms   GFLOPS  % peak")
                var kinds: [String: (ms: Double, flops: Int)] = [:]
                for op in ops {
                    let gflops = op.flops > 0 ? Double(op.flops) / op.milliseconds / 1e6 : 0
                    print(pad(op.label, 26) + " " + pad(op.implementation, 28)
                          + String(format: " %7.3f  %7.1f  %5.1f%%", op.milliseconds, gflops, op.flops > 0 ? 100 * gflops / peak : 0))
                    let kind = op.flops == 0 ? (op.label.contains("pool") || op.label.hasSuffix("downsample.-1") ? "pool" : "reorder")
                        : op.implementation.contains("wino") ? "winograd 3x3" : op.implementation.contains("1x1") ? "1x1" : "direct 3x3"
                    kinds[kind, default: (0, 0)].ms += op.milliseconds
                    kinds[kind, default: (0, 0)].flops += op.flops
                }
                let total = ops.reduce(0) { $0 + $1.milliseconds }
                for (kind, v) in kinds.sorted(by: { $0.value.ms > $1.value.ms }) {
                    print("  " + pad(kind, 14) + String(format: " %8.2f ms (%4.1f%%)  %6.2f GFLOP  %6.1f GFLOPS", v.ms, 100 * v.ms / total,
                                                        Double(v.flops) / 1e9, v.flops > 0 ? Double(v.flops) / v.ms / 1e6 : 0))
                }
                print(String(format: "  total          %8.2f ms", total))
            }
        }
    }

    struct Image: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time image decoding + CLIP preprocessing per file (one JSON line each).",
            discussion: "scripts/bench_image.py runs it beside Pillow on the same files.")

        @Argument(help: ArgumentHelp("Image files.", valueName: "file"))
        var files: [String]

        @Option(name: .long, help: "Preprocessed side S.")
        var size: Int = 224

        @Option(name: .long, help: "Timed runs per file.")
        var iterations: Int = 20

        @Flag(name: .long, help: "Decode JPEGs at full size (no DCT scaling towards S).")
        var noDctScaling = false

        func validate() throws {
            guard !files.isEmpty else { throw ValidationError("give at least one image file") }
            guard size >= 1, iterations >= 1 else { throw ValidationError("--size and --iterations must be at least 1") }
        }

        func run() throws {
            for f in files {
                try BenchCommand.printJSON(try ImageBenchmark.run(file: URL(fileURLWithPath: f), size: size, iterations: iterations,
                                                                  dctScaling: !noDctScaling), pretty: false)
            }
        }
    }

    struct Int8Convolutions: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "int8-convolutions",
            abstract: "Time every convolution of the CLIP RN50 trunk (224 px) in oneDNN's F32 and INT8 (u8 x s8) kernels.",
            discussion: "Layer by layer, zeros as data; the sum of the medians and the FLOP-weighted speed-up close the table.")

        @Option(name: .long, help: "Timed runs per convolution (median).")
        var runs: Int = 20

        @Option(name: .long, help: "oneDNN threads.")
        var threads: Int = 1

        @Flag(name: .long, help: "Print JSON instead of the table.")
        var json = false

        func validate() throws {
            guard runs >= 1, threads >= 1 else { throw ValidationError("--runs and --threads must be at least 1") }
        }

        func run() throws {
            let rows = try Int8ConvolutionBenchmark.run(runs: runs, threads: threads)
            if json { return try BenchCommand.printJSON(rows) }
            let peak = PeakFLOPS.measure(threads: threads).wallGflops
            print("CLIP RN50 trunk convolutions, 224 px, \(threads) thread(s), median of \(runs) runs; FP32 FMA peak \(String(format: "%.1f", peak)) GFLOPS")
            print(BenchCommand.pad("convolution", 22) + BenchCommand.pad("shape", 22) + "   F32 ms  %peak   INT8 ms  speed-up  kernels (F32 / INT8)")
            for r in rows {
                print(BenchCommand.pad(r.name, 22) + BenchCommand.pad(r.shape, 22)
                      + String(format: " %8.3f %5.0f%% %9.3f %8.2fx", r.f32Ms, r.flops / (r.f32Ms * 1e6) / peak * 100, r.int8Ms, r.f32Ms / r.int8Ms)
                      + "  \(r.f32Kernel) / \(r.int8Kernel)")
            }
            let (f32, int8) = (rows.map(\.f32Ms).reduce(0, +), rows.map(\.int8Ms).reduce(0, +))
            let flops = rows.map(\.flops).reduce(0, +)
            print(String(format: "all %d convolutions, %.2f GFLOP: F32 %.2f ms (%.0f%% of peak), INT8 %.2f ms: %.2fx",
                         rows.count, flops / 1e9, f32, flops / (f32 * 1e6) / peak * 100, int8, f32 / int8))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time caption decoding (greedy, beam, cached, uncached, per stage) on one thread.",
            discussion: "--data is a folder written by scripts/bench_decode.py (model/ and grid.safetensors), which runs this and prints the table beside PyTorch and ONNX Runtime.")

        @Option(name: .long, help: ArgumentHelp("The benchmark's folder.", valueName: "dir"))
        var data: String

        @Option(name: .long, help: "Timed runs per workload (median).")
        var repeats: Int = 5

        @Option(name: .long, help: ArgumentHelp("Only run N cached decodes, untimed (for perf record).", valueName: "n"))
        var profileRuns: Int?

        @Option(name: .customLong("fusion-weights"), help: ArgumentHelp(
            "With --profile-runs: the fusion weights those decodes read (f32 or int8; the timed runs measure both).", valueName: "kind"))
        var fusionWeights: FusionWeights = .f32

        @Option(name: .long, help: ArgumentHelp("With --profile-runs: the beam width of those decodes (1: greedy).", valueName: "n"))
        var profileBeam: Int = 1

        func run() throws {
            guard let report = try DecodeBenchmark.run(folder: URL(fileURLWithPath: data), repeats: repeats, profileRuns: profileRuns,
                                                       profileWeights: fusionWeights, profileBeam: profileBeam) else { return }
            try BenchCommand.printJSON(report, pretty: false)
        }
    }

    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time the caption metrics (without METEOR) on an annotations and a results file.",
            discussion: "scripts/bench_eval.py runs it beside pycocoevalcap on the same files.")

        @Option(name: .long, help: ArgumentHelp("COCO captions annotation file.", valueName: "file"))
        var annotations: String

        @Option(name: .long, help: ArgumentHelp("COCO results file.", valueName: "file"))
        var results: String

        @Option(name: .long, help: "Timed runs (median).")
        var runs: Int = 3

        func run() throws {
            try BenchCommand.printJSON(try EvalBenchmark.run(annotations: URL(fileURLWithPath: annotations),
                                                             results: URL(fileURLWithPath: results), runs: runs))
        }
    }
}
