// CaptionBenchmark (`lightcap bench caption`): per-stage timings of captioning one image after
// warm-up: median and p90 of each stage (decode, preprocess, backbone, concepts, fusion) and of
// the whole, through one reused CaptionSession as a server or batch job runs.

import Foundation
import LightCap
import LightCapCore
import LightCapImage

public enum CaptionBenchmark {
    /// One stage's summary, milliseconds.
    public struct Stage: Codable, Sendable {
        public var medianMs: Double
        public var p90Ms: Double

        enum CodingKeys: String, CodingKey {
            case medianMs = "median_ms"
            case p90Ms = "p90_ms"
        }
    }

    /// The stages that ran ("total" included) and the caption of the last run.
    public struct Report: Sendable {
        public var stages: [(name: String, summary: Stage)]
        public var caption: String
    }

    /// The stages in pipeline order.
    public static let stageOrder = ["decode", "preprocess", "backbone", "concepts", "fusion", "total"]

    /// Captions `imageData` (or, when nil, `syntheticImage`) `warmup` + `runs` times.
    public static func run(_ captioner: Captioner, imageData: Data?, options: DecodingOptions, runs: Int,
                           warmup: Int) throws -> Report {
        let session = try captioner.makeSession()
        let synthetic = syntheticImage(width: 640, height: 480)
        func once() throws -> Caption {
            if let imageData { return try session.caption(imageData: imageData, options: options) }
            return try session.caption(image: synthetic, options: options)
        }
        for _ in 0..<warmup { _ = try once() }
        var samples: [String: [Double]] = [:]
        var caption = ""
        for _ in 0..<max(runs, 1) {
            var c: Caption?
            let total = try Clock.time { c = try once() }
            for (k, v) in c!.timings { samples[k, default: []].append(v) }
            samples["total", default: []].append(total)
            caption = c!.text
        }
        let stages = stageOrder.compactMap { name in
            samples[name].map { (name, Stage(medianMs: Statistics.percentile($0, 0.5), p90Ms: Statistics.percentile($0, 0.9))) }
        }
        return Report(stages: stages, caption: caption)
    }

    /// A smooth colour gradient with a red square (the image when none is given).
    public static func syntheticImage(width: Int, height: Int) -> RGBImage {
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
