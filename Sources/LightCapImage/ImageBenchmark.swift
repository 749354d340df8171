// Decode + preprocess timing on a file, per stage, for `lightcap-image-bench` / `lightcap bench`.
import Foundation

/// Times LightCapImage on one image file: read + decode (with DCT scaling to S), then resize, crop
/// and normalise. Median over `iterations` runs after `warmup` untimed ones.
public enum ImageBenchmark {
    /// Medians in milliseconds.
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
    }

    /// Runs the benchmark; `dctScaling: false` decodes JPEGs at full size.
    public static func run(file url: URL, size: Int, iterations: Int = 20, warmup: Int = 3,
                           dctScaling: Bool = true) throws -> Result {
        let pre = CLIPPreprocessor(size: size)
        let full = try ImageDecoder.decode(contentsOf: url)
        var decode = [Double](), prep = [Double](), total = [Double]()
        var decoded = full
        var sink: Float = 0
        for i in 0..<(warmup + iterations) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let data = try Data(contentsOf: url)
            decoded = try ImageDecoder.decode(data, minimumSide: dctScaling ? size : nil)
            let t1 = DispatchTime.now().uptimeNanoseconds
            let x = pre(decoded)
            let t2 = DispatchTime.now().uptimeNanoseconds
            sink += x[x.count / 2]
            if i >= warmup {
                decode.append(Double(t1 - t0) / 1e6)
                prep.append(Double(t2 - t1) / 1e6)
                total.append(Double(t2 - t0) / 1e6)
            }
        }
        if sink.isNaN { print("") }
        func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
        return Result(file: url.lastPathComponent, sourceWidth: full.width, sourceHeight: full.height,
                      decodedWidth: decoded.width, decodedHeight: decoded.height, size: size,
                      iterations: iterations, decodeMs: median(decode), preprocessMs: median(prep),
                      totalMs: median(total))
    }
}
