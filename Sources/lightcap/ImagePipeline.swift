// The loaded model the command line uses: the Captioner (LightCap: decode, preprocess,
// CLIP ResNet grid, concepts, modulator, fusion + heads, decoding) and where it came from.

import Foundation
import LightCap
import LightCapCore
import LightCapImage

/// A loaded model ready to caption image files. Read-only; share between threads.
final class ImagePipeline: Sendable {
    let directory: URL
    let captioner: Captioner

    var configuration: Configuration { captioner.configuration }

    init(modelDirectory: URL, threads: Int, convolutions: ConvolutionAlgorithm = .direct) throws {
        directory = modelDirectory
        captioner = try Captioner(modelDirectory: modelDirectory, threads: threads, convolutions: convolutions)
    }

    /// Captions an image file; timings in milliseconds per stage (decode, preprocess, backbone,
    /// concepts, fusion).
    func caption(imageAt url: URL, options: DecodingOptions) throws -> Caption {
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw CLIError.unreadableFile(url.path, FileManager.default.fileExists(atPath: url.path) ? "permission denied" : "no such file")
        }
        return try captioner.caption(imageAt: url, options: options)
    }

    func caption(imageData data: Data, options: DecodingOptions) throws -> Caption {
        try captioner.caption(imageData: data, options: options)
    }

    /// Captions decoded pixels (timings without "decode").
    func caption(image rgb: RGBImage, options: DecodingOptions) throws -> Caption {
        let image = configuration.image
        var clock = Stopwatch()
        let pixels = CLIPPreprocessor(size: image.size, mean: image.mean, std: image.std)(rgb)
        let preprocessMs = clock.lap()
        var caption = try captioner.caption(pixels: pixels, options: options)
        caption.timings["preprocess"] = preprocessMs
        return caption
    }
}

/// Milliseconds between laps.
struct Stopwatch {
    private var last = ContinuousClock.now

    mutating func lap() -> Double {
        let now = ContinuousClock.now
        let d = now - last
        last = now
        return Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) * 1e-15
    }
}

/// Errors of the command line, each naming the file or flag at fault.
enum CLIError: Error, CustomStringConvertible {
    case unreadableFile(String, String)
    case noSuchPath(String)
    case noImages([String])
    case modelNotFound(String)
    case badUse(String)

    var description: String {
        switch self {
        case .unreadableFile(let p, let r): return "cannot read \(p): \(r)"
        case .noSuchPath(let p): return "no such file or directory: \(p)"
        case .noImages(let p): return "no images found in \(p.joined(separator: ", "))"
        case .modelNotFound(let p):
            return "no model directory at \(p) (it needs config.json, model.safetensors, vocab.txt, concepts.txt); pass --model DIR or set LIGHTCAP_MODEL"
        case .badUse(let m): return m
        }
    }
}
