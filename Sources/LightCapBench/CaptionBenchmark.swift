// CaptionBenchmark (`lightcap bench caption`): per-stage timings of captioning one image after
// warm-up: median and p90 of each stage (decode, preprocess, backbone, concepts, fusion) and of
// the whole, through one reused CaptionSession as a server or batch job runs. With a batch size
// above 1 each run captions that many copies as one batch (`CaptionSession.captions`): the
// stages before fusion are each image's mean, fusion and total the batch's, and "per image" is
// the total over the batch size.

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
    public static let stageOrder = ["decode", "preprocess", "backbone", "concepts", "fusion", "total", "per image"]

    /// Captions `imageData` (or, when nil, `syntheticImage`) `warmup` + `runs` times, `batch`
    /// copies at a time.
    public static func run(_ captioner: Captioner, imageData: Data?, options: DecodingOptions, runs: Int,
                           warmup: Int, batch: Int = 1) throws -> Report {
        let session = try captioner.makeSession()
        let synthetic = syntheticImage(width: 640, height: 480)
        let n = max(batch, 1)
        func once() throws -> [Caption] {
            if let imageData { return try session.captions(imageData: Array(repeating: imageData, count: n), options: options).map { try $0.get() } }
            return try session.captions(images: Array(repeating: synthetic, count: n), options: options).map { try $0.get() }
        }
        for _ in 0..<warmup { _ = try once() }

        var samples: [String: [Double]] = [:]
        var caption = ""
        for _ in 0..<max(runs, 1) {
            var c: [Caption] = []
            let total = try Clock.time { c = try once() }
            for k in Set(c.flatMap(\.timings.keys)) {
                let values = c.compactMap { $0.timings[k] }
                samples[k, default: []].append(k == "fusion" ? values[0] : values.reduce(0, +) / Double(values.count))
            }
            samples["total", default: []].append(total)
            samples["per image", default: []].append(total / Double(n))
            caption = c[0].text
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
