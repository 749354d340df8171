// TrunkQuantizer: `lightcap quantize`'s work. Calibrates the F32 trunk's convolution inputs on
// images, then writes a model directory whose trunk is INT8 (docs/FORMAT.md, "INT8 trunk"):
// each quantizable convolution's BatchNorm-folded weights on 127 levels per output channel, its
// bias in F32 and the scale of its u8 input (a clipping point chosen on the calibration images'
// histogram of that input, / 255). Everything else is copied unchanged.

import Foundation
import LightCapCore

public enum TrunkQuantizer {
    /// What calibration found about one convolution's input over the images.
    public struct InputStatistics: Sendable, Equatable {
        /// The largest value seen.
        public var largest: Float
        /// The value that maps to level 255 (larger inputs saturate there): the one, at most
        /// `largest`, that minimises the expected squared error of the u8 input (`clip`).
        public var clip: Float
    }

    /// Bins of each input's histogram over [0, largest].
    static let bins = 2048

    /// Each quantizable convolution's input statistics over `images` (normalised pixels
    /// [3, S, S] each) in the F32 `trunk`, by convolution name: two passes, the largest values,
    /// then histograms up to them, from which `clip` picks each clipping point.
    public static func calibrate(_ trunk: CLIPResNet, images: [[Float]]) throws -> [String: InputStatistics] {
        guard !images.isEmpty else { throw LightCapError.invalidArgument(reason: "calibration needs at least one image") }
        let workspace = try trunk.makeWorkspace()
        var output = [Float](repeating: 0, count: trunk.gridSide * trunk.gridSide * trunk.channels)
        func visit(_ body: (String, UnsafeBufferPointer<Float>) -> Void) throws {
            for pixels in images {
                guard pixels.count == 3 * trunk.imageSize * trunk.imageSize else {
                    throw LightCapError.invalidArgument(reason: "a calibration image has \(pixels.count) values, expected 3x\(trunk.imageSize)x\(trunk.imageSize)")
                }
                try pixels.withUnsafeBufferPointer { x in
                    try output.withUnsafeMutableBufferPointer { y in
                        try trunk.network.visitConvolutionInputs(input: x.baseAddress!, output: y.baseAddress!, workspace: workspace, body)
                    }
                }
            }
        }
        var largest: [String: Float] = [:]
        try visit { label, values in largest[label] = max(largest[label] ?? 0, values.max() ?? 0) }
        var histograms: [String: [Double]] = [:]
        try visit { label, values in
            let top = largest[label]!
            var h = histograms[label] ?? [Double](repeating: 0, count: bins)
            if top > 0 {
                let perBin = Float(bins) / top
                for v in values where v > 0 { h[min(bins - 1, Int(v * perBin))] += 1 }  // zeros are exact in u8
            }
            histograms[label] = h
        }
        var statistics: [String: InputStatistics] = [:]
        for (label, top) in largest {
            statistics[label] = InputStatistics(largest: top, clip: clip(histogram: histograms[label]!, largest: top))
        }
        return statistics
    }

    /// The clipping point c in (0, largest] minimising the expected squared error of holding the
    /// (positive) values of `histogram` (bins of equal width over [0, largest], each value at
    /// its bin's centre) on 255 levels of c / 255: values up to c cost a uniform rounding error,
    /// (c / 255)^2 / 12 each; values above c saturate and cost (x - c)^2. Candidates: the bins'
    /// upper edges from 1/16 of the range up; ties go to the larger c.
    static func clip(histogram h: [Double], largest: Float) -> Float {
        guard largest > 0 else { return largest }
        let width = Double(largest) / Double(h.count)
        // Suffix sums of n, n x, n x^2 above each candidate.
        var count = 0.0, first = 0.0, second = 0.0
        var best = (error: Double.infinity, clip: Double(largest))
        let total = h.reduce(0, +)
        for k in stride(from: h.count - 1, through: h.count / 16 - 1, by: -1) {
            let c = Double(k + 1) * width
            let below = total - count
            let error = below * (c / 255) * (c / 255) / 12 + second - 2 * c * first + c * c * count
            if error < best.error { best = (error, c) }
            let x = (Double(k) + 0.5) * width
            count += h[k]; first += h[k] * x; second += h[k] * x * x
        }
        return Float(best.clip)
    }

    /// Whether the convolution `name` is among those `prefix` names: itself ("layer4.0.conv3") or
    /// a stage or block above it ("layer4", "layer4.0").
    static func names(_ name: String, _ prefix: String) -> Bool {
        name == prefix || name.hasPrefix(prefix + ".")
    }

    /// The convolutions kept in F32 by default: those whose outputs the last stage adds into the
    /// grid itself (each of its blocks' `conv3` and its `downsample`). On the committed model
    /// the grid's top-k concept sets then stay equal to F32's on 94-95% of the scenes test
    /// images against 92% with them in INT8 too, for about 5% of the base trunk's multiply-adds
    /// (docs/VISUAL.md).
    public static func defaultKeepF32(_ layout: CLIPResNetLayout) -> [String] {
        guard let stage = layout.blocks.last.map({ String($0.name.prefix { $0 != "." }) }) else { return [] }
        return layout.blocks.filter { $0.name.hasPrefix(stage + ".") }.flatMap { [$0.conv3.name] + ($0.downsample.map { [$0.name] } ?? []) }
    }

    /// Every block's `conv3` and `downsample`: the convolutions that add into the residual
    /// stream (`--keep-f32 residual`). Kept in F32 they bring the committed model inside the
    /// quality budget, for about 45% more trunk time than the default (docs/VISUAL.md).
    public static func residualStream(_ layout: CLIPResNetLayout) -> [String] {
        layout.blocks.flatMap { [$0.conv3.name] + ($0.downsample.map { [$0.name] } ?? []) }
    }

    /// Writes the model directory `model` to `output` (a new directory) with its trunk in INT8,
    /// each input held up to its calibrated `clip` (`calibrate`), except the convolutions that
    /// `keepF32` names (convolution, block or stage names: "layer4", "layer3.1", "conv2";
    /// "residual": `residualStream`; nil: `defaultKeepF32`). Refuses an existing `output` and a model
    /// whose trunk is already INT8.
    public static func write(_ model: ModelDirectory, inputs: [String: InputStatistics], keepF32: [String]? = nil,
                             to output: URL) throws {
        let configuration = model.configuration
        guard configuration.visual.quantization == "none" else {
            throw LightCapError.invalidArgument(reason: "\(model.url.path): the trunk is already \(configuration.visual.quantization)")
        }
        guard !FileManager.default.fileExists(atPath: output.path) else {
            throw LightCapError.invalidArgument(reason: "\(output.path) exists: lightcap quantize writes a new directory and overwrites nothing")
        }
        let layout = CLIPResNetLayout(configuration.visual)
        let keepF32 = (keepF32 ?? defaultKeepF32(layout)).flatMap { $0 == "residual" ? residualStream(layout) : [$0] }
        for prefix in keepF32 where !layout.convolutions.contains(where: { names($0.name, prefix) }) {
            throw LightCapError.invalidArgument(reason: "keep F32: no trunk convolution is named \"\(prefix)\" (names: conv2, layer1.0.conv1, layer4, ...)")
        }
        let store = try model.weightStore()
        let visual = store.scoped("visual")
        let loader = ConvLoader(store: visual, folded: configuration.visual.batchnormFolded)
        var tensors: [String: SafetensorsWriter.Value] = [:]
        for c in layout.convolutions {
            let conv = try loader.conv(c)
            let key = visual.fullKey(c.name)
            guard c.quantizable && !keepF32.contains(where: { Self.names(c.name, $0) }) else {
                tensors["\(key).weight"] = .f32(conv.weight)
                tensors["\(key).bias"] = conv.bias.map { .f32($0) }
                continue
            }
            guard let input = inputs[c.name] else {
                throw LightCapError.invalidArgument(reason: "no calibration range for \(key)")
            }
            let q = try QuantizedConv2d(conv, inputMax: input.clip)
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
