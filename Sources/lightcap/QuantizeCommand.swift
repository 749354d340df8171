// `lightcap quantize IN OUT --calibration DIR`: writes a copy of a model directory whose trunk
// convolutions are INT8, their input scales calibrated on the given images (TrunkQuantizer).

import ArgumentParser
import Foundation
import LightCap
import LightCapCore
import LightCapImage
import LightCapModel

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a copy of a model with an INT8 trunk, calibrated on images.",
        discussion: """
            Every trunk convolution but the first and those of --keep-f32 gets INT8 weights (one scale per output channel) and a u8 \
            input on 255 levels up to a clipping point chosen on the calibration images (the least expected \
            squared error over that input's histogram); the rest of the model is copied unchanged. Captions of OUT may differ from IN's: docs/VISUAL.md gives the \
            quality budget. Example: lightcap quantize models/default /tmp/default-int8 --calibration images/
            """)

    @Argument(help: ArgumentHelp("The model directory to quantize (F32 trunk).", valueName: "in"))
    var input: String

    @Argument(help: ArgumentHelp("The directory to write (must not exist).", valueName: "out"))
    var output: String

    @Option(name: .long, help: ArgumentHelp("Images (files or folders) to calibrate on: images like those the model will caption, not its test images.",
                                            valueName: "path"))
    var calibration: [String] = []

    @Option(name: .long, help: "Calibrate on at most this many of them (the first in path order; at most 1000).")
    var count: Int = 100

    /// The calibration images are held in memory (3 x S x S floats each: 0.6 MB at 224 px).
    static let maxCount = 1000

    @Option(name: .customLong("keep-f32"), help: ArgumentHelp(
        "Convolutions kept in F32, comma-separated: names, blocks or stages (\"layer4\", \"layer3.1\", \"layer4.0.conv3\"), \"residual\" for every block's conv3 and downsample (closer to F32, slower); \"\" for none.",
        discussion: "Default: the last stage's convolutions that add into the grid (each block's conv3 and the downsample).",
        valueName: "names"))
    var keepF32: String?

    func validate() throws {
        guard !calibration.isEmpty else { throw ValidationError("--calibration needs at least one image or folder") }
        guard (1...Self.maxCount).contains(count) else {
            throw ValidationError("--count must be 1 to \(Self.maxCount) (the images are held in memory), got \(count)")
        }
    }

    func run() throws {
        var options = ModelOptions()
        options.model = input
        let model = try ModelDirectory(url: try options.modelDirectory())
        let out = URL(fileURLWithPath: output)
        guard !FileManager.default.fileExists(atPath: out.path) else {
            throw CLIError.badUse("\(output) exists: lightcap quantize writes a new directory and overwrites nothing")
        }
        let paths = Array(try ImageInputs.expand(calibration).prefix(count))
        guard !paths.isEmpty else { throw CLIError.noImages(calibration) }
        let config = model.configuration
        let trunk = try CLIPResNet(try model.weightStore(), configuration: config)
        let preprocess = CLIPPreprocessor(size: config.image.size, mean: config.image.mean, std: config.image.std)
        var images: [[Float]] = []
        for path in paths {
            do {
                images.append(try preprocess(imageData: try Data(contentsOf: URL(fileURLWithPath: path))))
            } catch {
                throw CLIError.unreadableFile(path, "\(error)")
            }
        }
        let inputs = try TrunkQuantizer.calibrate(trunk, images: images)
        let keep = keepF32.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        try TrunkQuantizer.write(model, inputs: inputs, keepF32: keep, to: out)
        let quantized = try ModelDirectory(url: out).openWeights().names.filter { $0.hasSuffix(".input_scale") }.count
        let size = { (url: URL) in (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0 }
        let before = size(model.weightsURL), after = size(out.appendingPathComponent("model.safetensors"))
        print("quantized \(quantized) trunk convolutions on \(images.count) calibration image(s): "
              + "model.safetensors \(before / 1_000_000) MB -> \(after / 1_000_000) MB, written to \(output)")
    }
}
