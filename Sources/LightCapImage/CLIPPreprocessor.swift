// CLIP's image preprocessing, as open_clip/torchvision run it on a PIL image:
// Resize(S, BICUBIC) -> CenterCrop(S) -> ToTensor (/255) -> Normalize(mean, std), CHW float32.
import Foundation

/// Turns an `RGBImage` into the `[3, S, S]` float input of the visual encoder (docs/FORMAT.md, step 1).
public struct CLIPPreprocessor: Sendable {
    /// OpenAI CLIP's channel means.
    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    /// OpenAI CLIP's channel standard deviations.
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    /// Output side S (config.json `image.size`).
    public let size: Int
    /// Per-channel mean (3 values).
    public let mean: [Float]
    /// Per-channel standard deviation (3 values).
    public let std: [Float]

    /// A preprocessor for side `size`; `mean`/`std` default to CLIP's.
    public init(size: Int, mean: [Float] = CLIPPreprocessor.clipMean, std: [Float] = CLIPPreprocessor.clipStd) {
        precondition(size > 0 && mean.count == 3 && std.count == 3, "CLIPPreprocessor: size > 0, 3 means, 3 stds")
        self.size = size
        self.mean = mean
        self.std = std
    }

    /// torchvision's Resize(S) output size: the shorter side becomes S, the longer
    /// `int(S * long / short)` (truncated, computed in double like Python's true division).
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        if width <= height {
            return (size, Int(Double(size) * Double(height) / Double(width)))
        }
        return (Int(Double(size) * Double(width) / Double(height)), size)
    }

    /// torchvision's CenterCrop offsets: `int(round((side - S) / 2.0))`, Python's round (half to even).
    public func cropOrigin(width: Int, height: Int) -> (x: Int, y: Int) {
        func offset(_ side: Int) -> Int { Int((Double(side - size) / 2.0).rounded(.toNearestOrEven)) }
        return (offset(width), offset(height))
    }

    /// Step 1: the whole image resized so its shorter side is S (Pillow BICUBIC).
    public func resized(_ image: RGBImage) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height)
        return BicubicResampler.resize(image, width: w, height: h)
    }

    /// Step 2: the centre S x S window of an image whose sides are >= S.
    public func centerCropped(_ image: RGBImage) -> RGBImage {
        precondition(image.width >= size && image.height >= size, "centerCropped: image smaller than \(size)")
        let (x, y) = cropOrigin(width: image.width, height: image.height)
        return BicubicResampler.Reference.crop(image, x: x, y: y, width: size, height: size)
    }

    /// Steps 1 and 2 fused: only the kept window is resampled (same bytes as `centerCropped(resized(_:))`).
    public func resizedAndCropped(_ image: RGBImage) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height)
        let (x, y) = cropOrigin(width: w, height: h)
        return BicubicResampler.resize(image, width: w, height: h, crop: (x, y, size, size))
    }

    /// Steps 3 and 4 on an S x S image: `(v / 255 - mean[c]) / std[c]` in Float32, CHW.
    public func normalized(_ image: RGBImage) -> [Float] {
        let plane = image.width * image.height
        var out = [Float](repeating: 0, count: 3 * plane)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<3 {
                    let m = mean[c], s = std[c]
                    // 256-entry table: the same Float32 operations, done once per value.
                    var table = [Float](repeating: 0, count: 256)
                    for v in 0..<256 { table[v] = (Float(v) / 255 - m) / s }
                    for i in 0..<plane { dst[c * plane + i] = table[Int(src[i * 3 + c])] }
                }
            }
        }
        return out
    }

    /// The whole preprocessing: `[3, S, S]` floats, channel-major.
    public func callAsFunction(_ image: RGBImage) -> [Float] {
        normalized(resizedAndCropped(image))
    }

    /// Decodes `data` (JPEG at the smallest DCT scale whose shorter side is >= S) and preprocesses it.
    public func callAsFunction(imageData data: Data, limits: ImageLimits = .init()) throws -> [Float] {
        self(try ImageDecoder.decode(data, limits: limits, minimumSide: size))
    }
}
