// TrunkQuantizer: `lightcap quantize`'s work. Calibrates the F32 trunk's convolution inputs on
// images, then writes a model directory whose trunk is INT8 (docs/FORMAT.md, "INT8 trunk"):
// each quantizable convolution's BatchNorm-folded weights on 127 levels per output channel, its
// bias in F32 and the scale of its u8 input (the largest input seen / 255). Everything else is
// copied unchanged.

import Foundation
import LightCapCore

public enum TrunkQuantizer {
    /// The largest input of each quantizable convolution of `trunk` (an F32 trunk) over `images`
    /// (normalised pixels [3, S, S] each), by convolution name.
    public static func calibrate(_ trunk: CLIPResNet, images: [[Float]]) throws -> [String: Float] {
        guard !images.isEmpty else { throw LightCapError.invalidArgument(reason: "calibration needs at least one image") }
        let workspace = try trunk.makeWorkspace()
        var output = [Float](repeating: 0, count: trunk.gridSide * trunk.gridSide * trunk.channels)
        var largest: [String: Float] = [:]
        for pixels in images {
            guard pixels.count == 3 * trunk.imageSize * trunk.imageSize else {
                throw LightCapError.invalidArgument(reason: "a calibration image has \(pixels.count) values, expected 3x\(trunk.imageSize)x\(trunk.imageSize)")
            }
            let ranges = try pixels.withUnsafeBufferPointer { x in
                try output.withUnsafeMutableBufferPointer { y in
                    try trunk.network.inputRanges(input: x.baseAddress!, output: y.baseAddress!, workspace: workspace)
                }
            }
            for r in ranges { largest[r.label] = max(largest[r.label] ?? 0, r.max) }
        }
        return largest
    }

    /// Writes the model directory `model` to `output` (a new directory) with its trunk in INT8 at
    /// the input scales of `inputMax` (`calibrate`). Refuses an existing `output` and a model
    /// whose trunk is already INT8.
    public static func write(_ model: ModelDirectory, inputMax: [String: Float], to output: URL) throws {
        let configuration = model.configuration
        guard configuration.visual.quantization == "none" else {
            throw LightCapError.invalidArgument(reason: "\(model.url.path): the trunk is already \(configuration.visual.quantization)")
        }
        guard !FileManager.default.fileExists(atPath: output.path) else {
            throw LightCapError.invalidArgument(reason: "\(output.path) exists: lightcap quantize writes a new directory and overwrites nothing")
        }
        let store = try model.weightStore()
        let visual = store.scoped("visual")
        let loader = ConvLoader(store: visual, folded: configuration.visual.batchnormFolded)
        var tensors: [String: SafetensorsWriter.Value] = [:]
        for c in CLIPResNetLayout(configuration.visual).convolutions {
            let conv = try loader.conv(c)
            let key = visual.fullKey(c.name)
            guard c.quantizable else {
                tensors["\(key).weight"] = .f32(conv.weight)
                tensors["\(key).bias"] = conv.bias.map { .f32($0) }
                continue
            }
            guard let largest = inputMax[c.name] else {
                throw LightCapError.invalidArgument(reason: "no calibration range for \(key)")
            }
            let q = try QuantizedConv2d(conv, inputMax: largest)
            tensors["\(key).weight"] = .i8(q.weight, shape: q.shape)
            tensors["\(key).weight_scale"] = .f32(Tensor(shape: [q.outChannels], scalars: q.weightScales))
            tensors["\(key).bias"] = q.bias.map { .f32($0) }
            tensors["\(key).input_scale"] = .f32(Tensor(shape: [1], scalars: [q.inputScale]))
        }
        let file = store.file
        for key in store.untakenKeys {
            let entry = try file.entry(named: key)
            tensors[key] = entry.dtype == .i64 ? .i64(try file.int64s(named: key), shape: entry.shape)
                                               : .f32(try file.tensor(named: key))
        }
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: model.configURL)) as? [String: Any] ?? [:]
        var visualConfig = config["visual"] as? [String: Any] ?? [:]
        visualConfig["quantization"] = "int8"
        visualConfig["batchnorm_folded"] = true
        config["visual"] = visualConfig

        // Written into a temporary sibling, then renamed: a failure leaves no half directory.
        let fm = FileManager.default
        let staging = output.deletingLastPathComponent()
            .appendingPathComponent(".\(output.lastPathComponent).partial-\(ProcessInfo.processInfo.processIdentifier)")
        try? fm.removeItem(at: staging)
        try fm.createDirectory(at: staging, withIntermediateDirectories: true)
        do {
            for name in try fm.contentsOfDirectory(atPath: model.url.path).sorted()
            where !["config.json", "model.safetensors"].contains(name) {
                try fm.copyItem(at: model.url.appendingPathComponent(name), to: staging.appendingPathComponent(name))
            }
            try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
                .write(to: staging.appendingPathComponent("config.json"))
            try SafetensorsWriter.write(tensors, to: staging.appendingPathComponent("model.safetensors"))
            try fm.moveItem(at: staging, to: output)
        } catch {
            try? fm.removeItem(at: staging)
            throw error
        }
    }
}
