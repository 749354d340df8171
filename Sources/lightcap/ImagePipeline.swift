// The whole image -> caption pipeline the command line runs: decode and preprocess
// (LightCapImage), the CLIP ResNet grid (LightCapModel), then Captioner.caption(grid:)
// (LightCap). When Captioner gains `caption(imageAt:options:)` (the agreed API), `caption`
// below becomes a call to it; until then the stages are chained here.

import Foundation
import LightCap
import LightCapCore
import LightCapImage
import LightCapModel

/// A loaded model ready to caption image files. Read-only; share between threads.
final class ImagePipeline: Sendable {
    let directory: URL
    let captioner: Captioner
    let visual: CLIPResNet
    let preprocessor: CLIPPreprocessor

    var configuration: Configuration { captioner.configuration }

    init(modelDirectory: URL, threads: Int) throws {
        directory = modelDirectory
        captioner = try Captioner(modelDirectory: modelDirectory, threads: threads)
        let model = try ModelDirectory(url: modelDirectory)
        visual = try CLIPResNet(try model.weightStore(), configuration: model.configuration)
        let image = model.configuration.image
        preprocessor = CLIPPreprocessor(size: image.size, mean: image.mean, std: image.std)
    }

    /// Captions an image file; timings in milliseconds per stage (decode, preprocess, backbone,
    /// concepts, fusion).
    func caption(imageAt url: URL, options: DecodingOptions) throws -> Caption {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIError.unreadableFile(url.path, (error as NSError).localizedDescription)
        }
        return try caption(imageData: data, options: options)
    }

    func caption(imageData data: Data, options: DecodingOptions) throws -> Caption {
        var clock = Stopwatch()
        let image = try ImageDecoder.decode(data, minimumSide: preprocessor.size)
        let decodeMs = clock.lap()
        var caption = try caption(image: image, options: options)
        caption.timings["decode"] = decodeMs
        return caption
    }

    /// Captions decoded pixels (timings without "decode").
    func caption(image: RGBImage, options: DecodingOptions) throws -> Caption {
        var clock = Stopwatch()
        let pixels = preprocessor(image)
        let preprocessMs = clock.lap()
        Threads.set(captioner.threads)
        let grid = try visual.grid(pixels: pixels)
        let backboneMs = clock.lap()
        var caption = try captioner.caption(grid: grid, options: options)
        caption.timings["preprocess"] = preprocessMs
        caption.timings["backbone"] = backboneMs
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
