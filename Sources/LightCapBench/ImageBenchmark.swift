// ImageBenchmark (`lightcap bench image`): LightCapImage's decode + CLIP preprocessing of one
// file, per stage (scripts/bench_image.py times Pillow on the same files in the same run).

import Foundation
import LightCapImage

/// Times read + decode (with DCT scaling to S), then resize, crop and normalise. Median over
/// `iterations` runs after `warmup` untimed ones, in thread CPU time (steady on a shared
/// machine) and wall time.
public enum ImageBenchmark {
    /// Medians in milliseconds (CPU time of the calling thread; `wallTotalMs` is wall-clock).
    public struct Result: Codable, Sendable {
        public var file: String
        public var sourceWidth: Int
        public var sourceHeight: Int
        public var decodedWidth: Int
        public var decodedHeight: Int
        public var size: Int
        public var iterations: Int
        public var decodeMs: Double
        public var preprocessMs: Double
        public var totalMs: Double
        public var wallTotalMs: Double
    }

    /// Runs the benchmark; `dctScaling: false` decodes JPEGs at full size.
    public static func run(file url: URL, size: Int, iterations: Int = 20, warmup: Int = 3,
                           dctScaling: Bool = true) throws -> Result {
        let pre = CLIPPreprocessor(size: size)
        let full = try ImageDecoder.decode(contentsOf: url)
        var decode = [Double](), prep = [Double](), total = [Double](), wall = [Double]()
        var decoded = full
        var sink: Float = 0
        for i in 0..<(warmup + iterations) {
            let w0 = Clock.wallMs()
            let t0 = Clock.threadCPUMs()
            let data = try Data(contentsOf: url)
            decoded = try ImageDecoder.decode(data, minimumSide: dctScaling ? size : nil)
            let t1 = Clock.threadCPUMs()
            let x = pre(decoded)
            let t2 = Clock.threadCPUMs()
            let w2 = Clock.wallMs()
            sink += x[x.count / 2]
            if i >= warmup {
                decode.append(t1 - t0)
                prep.append(t2 - t1)
                total.append(t2 - t0)
                wall.append(w2 - w0)
            }
        }
        if sink.isNaN { print("") }  // keeps the preprocessing
        return Result(file: url.lastPathComponent, sourceWidth: full.width, sourceHeight: full.height,
                      decodedWidth: decoded.width, decodedHeight: decoded.height, size: size,
                      iterations: iterations, decodeMs: Statistics.median(decode), preprocessMs: Statistics.median(prep),
                      totalMs: Statistics.median(total), wallTotalMs: Statistics.median(wall))
    }
}
