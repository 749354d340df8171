// `lightcap bench`: per-stage timings of captioning one image, after warm-up: median and p90
// of each stage (decode, preprocess, backbone, concepts, fusion) and of the whole, with the
// thread count and the model's size. Benchmarks are not tests: run on a quiet machine.

import ArgumentParser
import Foundation
import LightCap
import LightCapCore
import LightCapImage

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time each stage of captioning (warm-up, then median and p90 over runs).",
        discussion: """
            Without --image, a synthetic 640x480 image is captioned (no decode stage).
            Example: lightcap bench --image examples/scene1.png --runs 50 --threads 2
            """)

    @Option(name: .long, help: ArgumentHelp("Image file to caption (JPEG, PNG, WebP).", valueName: "file"))
    var image: String?

    @Option(name: .long, help: "Timed runs.")
    var runs: Int = 20

    @Option(name: .long, help: "Untimed warm-up runs.")
    var warmup: Int = 3

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    @OptionGroup var model: ModelOptions
    @OptionGroup var decoding: DecodingFlags

    func validate() throws {
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be 0 or more") }
    }

    func run() throws {
        var clock = Stopwatch()
        let pipeline = try model.loadPipeline()
        let loadMs = clock.lap()
        let options = try decoding.options(for: pipeline)
        let data: Data?
        if let image {
            guard let d = FileManager.default.contents(atPath: image) else { throw CLIError.noSuchPath(image) }
            data = d
        } else {
            data = nil
        }
        let synthetic = Self.syntheticImage(width: 640, height: 480)
        func once() throws -> Caption {
            if let data { return try pipeline.caption(imageData: data, options: options) }
            return try pipeline.caption(image: synthetic, options: options)
        }
        for _ in 0..<warmup { _ = try once() }
        var samples: [String: [Double]] = [:]
        var caption = ""
        for _ in 0..<runs {
            var total = Stopwatch()
            let c = try once()
            let t = total.lap()
            for (k, v) in c.timings { samples[k, default: []].append(v) }
            samples["total", default: []].append(t)
            caption = c.text
        }
        let stages = ["decode", "preprocess", "backbone", "concepts", "fusion", "total"].filter { samples[$0] != nil }
        let weights = try ModelDirectory(url: pipeline.directory).weightsURL
        let bytes = (try? FileManager.default.attributesOfItem(atPath: weights.path)[.size] as? Int) ?? 0
        let params = try SafetensorsFile(url: weights).entries.values.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let decodingName = options.beamSize == 1 ? "greedy" : "beam \(options.beamSize)"

        if json {
            var object: [String: Any] = [
                "model": pipeline.directory.path, "threads": model.threads, "runs": runs, "warmup": warmup,
                "decoding": decodingName, "max_length": options.maxLength, "load_ms": loadMs,
                "model_bytes": bytes, "parameters": params, "caption": caption, "image": image ?? "synthetic 640x480",
            ]
            var st: [String: Any] = [:]
            for s in stages { st[s] = ["median_ms": Self.percentile(samples[s]!, 0.5), "p90_ms": Self.percentile(samples[s]!, 0.9)] }
            object["stages"] = st
            let out = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: out, as: UTF8.self))
            return
        }
        print("model      \(pipeline.directory.path) (\(pipeline.configuration.name), \(Self.megabytes(bytes)), \(params) parameters)")
        print("image      \(image ?? "synthetic 640x480")")
        print("decoding   \(decodingName), max \(options.maxLength) tokens; threads \(model.threads); \(warmup) warm-up + \(runs) runs")
        print(String(format: "load       %.1f ms", loadMs))
        print("caption    \(caption)")
        print("stage          median ms     p90 ms")
        for s in stages {
            print(s.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %10.2f %10.2f", Self.percentile(samples[s]!, 0.5), Self.percentile(samples[s]!, 0.9)))
        }
    }

    /// Nearest-rank percentile.
    static func percentile(_ x: [Double], _ q: Double) -> Double {
        let s = x.sorted()
        let rank = Int((q * Double(s.count)).rounded(.up)) - 1
        return s[min(max(rank, 0), s.count - 1)]
    }

    static func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

    /// A smooth colour gradient with a few shapes.
    static func syntheticImage(width: Int, height: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                let inSquare = abs(x - width / 3) < 60 && abs(y - height / 2) < 60
                pixels[i] = inSquare ? 220 : UInt8(x * 255 / width)
                pixels[i + 1] = inSquare ? 30 : UInt8(y * 255 / height)
                pixels[i + 2] = inSquare ? 30 : 128
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
