// VisualBenchmark (`lightcap bench visual`): times the CLIPResNet trunk (stem to layer4) at the
// base size on random or given weights: load (mmap + packing), warm-up then median of N forwards
// per thread count and convolution policy, GFLOPS and the fraction of the FMA-measured FP32 peak,
// peak RSS; or the time of every op inside the network (`profile`).

import Foundation
import LightCapCore
import LightCapModel

/// The visual encoder benchmark.
public enum VisualBenchmark {
    /// What to run.
    public struct Options: Sendable {
        /// A safetensors file with folded `visual.` weights for `configuration`; nil: random
        /// weights written to a temporary file first.
        public var weights: URL?
        /// The model configuration (default: `base` at 224, no attention pool).
        public var configuration: Configuration = VisualBenchmark.baseConfiguration()
        public var threads: [Int] = [1, 2]
        public var policies: [ConvolutionPolicy] = [.exact, .oneDNNWinograd, .lightcapWinograd]
        public var warmup: Int = 3
        public var iterations: Int = 20
        public var seed: UInt64 = 0
        public init() {}
    }

    /// One (policy, threads) measurement.
    public struct Row: Codable, Sendable {
        public let policy: String
        public let threads: Int
        public let medianMs: Double
        public let minMs: Double
        public let gflops: Double
        public let peakGflops: Double
        /// gflops / peakGflops.
        public let fractionOfPeak: Double
        /// Process CPU time per forward (all threads, ms).
        public let cpuMs: Double
        /// GFLOPS by CPU time (flops / (cpuMs / threads)): what the run reaches when it has the
        /// cores to itself; compare with `cpuPeakGflops`.
        public let cpuGflops: Double
        /// The FMA peak by CPU time for this thread count.
        public let cpuPeakGflops: Double
        /// max |grid - exact grid| / max |exact grid| on the same input (0 for exact).
        public let relativeErrorVsExact: Double
    }

    /// One op of the network in a profile: its median time.
    public struct OpProfile: Codable, Sendable {
        public let label: String
        /// oneDNN's implementation name, or LightCap's kernel's.
        public let implementation: String
        /// Floating-point operations (convolutions; 0 for reorders and pools).
        public let flops: Int
        /// Median milliseconds over the runs.
        public let milliseconds: Double
    }

    /// The whole run.
    public struct Report: Codable, Sendable {
        public let configurationName: String
        public let imageSize: Int
        public let convolutionGflop: Double
        public let fmaISA: String
        /// Median load time (mmap + validation + packing) of 3 loads, ms, per policy.
        public let loadMs: [String: Double]
        /// The very first load of the process (cold oneDNN JIT), ms.
        public let firstLoadMs: Double
        public let packedWeightMB: Double
        /// Resident memory before loading and the peak while loading and running (MB; Linux).
        public let rssBeforeMB: Double
        public let peakRSSMB: Double
        public let rows: [Row]
        /// oneDNN implementation per convolution of the direct network (label, name).
        public let implementations: [String: String]
    }

    /// `base` (CLIP RN50 trunk) at 224 without the attention pool.
    public static func baseConfiguration() -> Configuration {
        var c = Configuration()
        c.name = "base"
        c.image.size = 224
        c.visual.layers = [3, 4, 6, 3]
        c.visual.width = 64
        c.visual.heads = 32
        c.visual.outputDim = 1024
        c.visual.attentionPool = false
        c.visual.batchnormFolded = true
        return c
    }

    /// Writes random folded `visual.` weights for `configuration` (uniform, variance 1/fan_in;
    /// biases small) to `url`.
    public static func writeRandomWeights(_ configuration: Configuration, to url: URL, seed: UInt64 = 0) throws {
        var state = seed &+ 0x1234_5678
        func uniform(_ count: Int, _ scale: Float) -> [Float] {
            (0..<count).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return (Float(Int64(bitPattern: state) >> 40) / Float(1 << 23)) * scale
            }
        }
        var tensors: [String: SafetensorsWriter.Value] = [:]
        for layer in CLIPResNetLayout(configuration.visual).convolutions {
            let (o, i, k) = (layer.outChannels, layer.inChannels, layer.kernel)
            tensors["visual.\(layer.name).weight"] = .f32(Tensor(shape: [o, i, k, k], scalars: uniform(o * i * k * k, (3 / Float(i * k * k)).squareRoot())))
            tensors["visual.\(layer.name).bias"] = .f32(Tensor(shape: [o], scalars: uniform(o, 0.01)))
        }
        do { try SafetensorsWriter.write(tensors, to: url) } catch {
            throw LightCapError.io(path: url.path, reason: "cannot write the weights: \(error.localizedDescription)")
        }
    }

    /// Runs the benchmark; `log` receives progress lines.
    public static func run(_ options: Options, log: (String) -> Void = { _ in }) throws -> Report {
        let config = options.configuration
        var weightsURL = options.weights
        var temporary: URL?
        if weightsURL == nil {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-bench-\(ProcessInfo.processInfo.processIdentifier).safetensors")
            log("writing random \(config.name) weights to \(url.path)")
            try writeRandomWeights(config, to: url, seed: options.seed)
            weightsURL = url
            temporary = url
        }
        defer { if let temporary { try? FileManager.default.removeItem(at: temporary) } }

        func load(_ policy: ConvolutionPolicy, threads: Int = 1) throws -> (CLIPResNet, Double) {
            let start = DispatchTime.now().uptimeNanoseconds
            let store = WeightStore(file: try SafetensorsFile(url: weightsURL!))
            let model = try CLIPResNet(store, configuration: config, policy: policy, threads: threads)
            try store.finish()
            return (model, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }

        let pixels = (0..<(3 * config.image.size * config.image.size)).map { Float(($0 * 7919) % 4001) / 1000 - 2 }
        Threads.set(1)
        let rssBefore = Memory.residentMB()
        Memory.resetPeak()
        let (_, firstLoad) = try load(.exact)
        var loadMs: [String: Double] = [:]
        var rows: [Row] = []
        var exactGrid: Tensor?
        var implementations: [String: String] = [:]
        var packedMB = 0.0
        var flops = 0
        var peaks: [Int: PeakFLOPS.Peak] = [:]
        for t in options.threads { peaks[t] = PeakFLOPS.measure(threads: t) }
        for policy in options.policies {
            var times: [Double] = []
            var model: CLIPResNet?
            for _ in 0..<3 {
                let (m, ms) = try load(policy)
                times.append(ms)
                model = m
            }
            loadMs[policy.rawValue] = Statistics.median(times)
            let net = model!.network
            flops = net.convolutionFlops
            if policy == .exact {
                packedMB = Double(net.packedWeightBytes) / 1e6
                for (label, impl) in net.implementations where label.contains("conv") || label.contains("downsample.0") {
                    implementations[label] = impl
                }
            }
            let workspace = try model!.makeWorkspace()
            let grid = try model!.grid(pixels: pixels, workspace: workspace)
            if policy == .exact { exactGrid = grid }
            let error = exactGrid.map { Double(grid.maxAbsDifference($0) / max($0.maxAbs, 1e-30)) } ?? .nan
            for t in options.threads {
                // The network runs on the threads it was built for (ConvolutionNetwork.threads).
                let (runner, runnerWorkspace) = t == model!.network.threads
                    ? (model!, workspace) : try { let m = try load(policy, threads: t).0; return (m, try m.makeWorkspace()) }()
                var out = Tensor(zeros: grid.shape)
                var samples: [Double] = []
                var cpuStart = 0.0
                try pixels.withUnsafeBufferPointer { x in
                    try out.withUnsafeMutableBufferPointer { y in
                        for i in 0..<(options.warmup + options.iterations) {
                            if i == options.warmup { cpuStart = Clock.processCPUSeconds() }
                            let start = DispatchTime.now().uptimeNanoseconds
                            try runner.grid(pixels: x.baseAddress!, into: y.baseAddress!, workspace: runnerWorkspace)
                            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                            if i >= options.warmup { samples.append(ms) }
                        }
                    }
                }
                let cpuMs = (Clock.processCPUSeconds() - cpuStart) * 1e3 / Double(max(samples.count, 1))
                let cpuGflops = Double(flops) / (cpuMs / Double(t) / 1e3) / 1e9
                let med = Statistics.median(samples)
                let gflops = Double(flops) / (med / 1e3) / 1e9
                let peak = peaks[t]?.wallGflops ?? 0
                rows.append(Row(policy: policy.rawValue, threads: t, medianMs: med, minMs: samples.min() ?? med,
                                gflops: gflops, peakGflops: peak, fractionOfPeak: peak > 0 ? gflops / peak : 0,
                                cpuMs: cpuMs, cpuGflops: cpuGflops, cpuPeakGflops: peaks[t]?.cpuGflops ?? 0,
                                relativeErrorVsExact: policy == .exact ? 0 : error))
                log(String(format: "%@ threads=%d median %.2f ms (min %.2f) %.1f GFLOPS = %.0f%% of peak %.1f; CPU %.2f ms/run, %.1f GFLOPS = %.0f%% of CPU-time peak %.1f",
                           policy.rawValue, t, med, samples.min() ?? med, gflops, 100 * gflops / max(peak, 1e-9), peak,
                           cpuMs, cpuGflops, 100 * cpuGflops / max(peaks[t]?.cpuGflops ?? 0, 1e-9), peaks[t]?.cpuGflops ?? 0))
            }
        }
        return Report(configurationName: config.name, imageSize: config.image.size, convolutionGflop: Double(flops) / 1e9,
                      fmaISA: PeakFLOPS.isa, loadMs: loadMs, firstLoadMs: firstLoad, packedWeightMB: packedMB,
                      rssBeforeMB: rssBefore, peakRSSMB: Memory.peakMB(), rows: rows, implementations: implementations)
    }

    /// What `memory` reports (MB, ms).
    public struct MemoryReport: Codable, Sendable {
        public let rssBeforeMB: Double
        public let peakRSSMB: Double
        public let rssAfterMB: Double
        public let loadMs: Double

        enum CodingKeys: String, CodingKey {
            case rssBeforeMB = "rss_before_mb", peakRSSMB = "peak_rss_mb", rssAfterMB = "rss_after_mb", loadMs = "load_ms"
        }
    }

    /// Only loads `options.weights` with the first policy and runs `runs` forwards on one
    /// thread: the backbone's own load time and peak resident memory (run it in a fresh process).
    public static func memory(_ options: Options, runs: Int) throws -> MemoryReport {
        guard let weights = options.weights else {
            throw LightCapError.invalidArgument(reason: "the memory benchmark needs a weights file")
        }
        Threads.set(1)
        let before = Memory.residentMB()
        var model: CLIPResNet?
        let loadMs = try Clock.time {
            let store = WeightStore(file: try SafetensorsFile(url: weights))
            model = try CLIPResNet(store, configuration: options.configuration, policy: options.policies.first ?? .exact)
            try store.finish()
        }
        let pixels = [Float](repeating: 0.5, count: 3 * model!.imageSize * model!.imageSize)
        let workspace = try model!.makeWorkspace()
        for _ in 0..<runs { _ = try model!.grid(pixels: pixels, workspace: workspace) }
        return MemoryReport(rssBeforeMB: before, peakRSSMB: Memory.peakMB(), rssAfterMB: Memory.residentMB(), loadMs: loadMs)
    }

    /// Per-op times of the trunk for each of `options.policies`, on `options.threads.first`
    /// threads: `options.warmup` forwards, then `ConvolutionNetwork.profile` over
    /// `options.iterations` runs. Shows where the time goes inside the network (each op with
    /// the caches as the ops before it left them), unlike timing a layer alone.
    public static func profile(_ options: Options, log: (String) -> Void = { _ in }) throws -> [String: [OpProfile]] {
        let config = options.configuration
        let url = options.weights ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("lightcap-profile-\(ProcessInfo.processInfo.processIdentifier).safetensors")
        if options.weights == nil {
            log("writing random \(config.name) weights to \(url.path)")
            try writeRandomWeights(config, to: url, seed: options.seed)
        }
        defer { if options.weights == nil { try? FileManager.default.removeItem(at: url) } }
        let threads = options.threads.first ?? 1
        let pixels = (0..<(3 * config.image.size * config.image.size)).map { Float(($0 * 7919) % 4001) / 1000 - 2 }
        var result: [String: [OpProfile]] = [:]
        for policy in options.policies {
            let store = WeightStore(file: try SafetensorsFile(url: url))
            let model = try CLIPResNet(store, configuration: config, policy: policy, threads: threads)
            try store.finish()
            let workspace = try model.makeWorkspace()
            var out = Tensor(zeros: [model.gridSide * model.gridSide, model.channels])
            result[policy.rawValue] = try pixels.withUnsafeBufferPointer { x in
                try out.withUnsafeMutableBufferPointer { y in
                    for _ in 0..<options.warmup { try model.grid(pixels: x.baseAddress!, into: y.baseAddress!, workspace: workspace) }
                    return try model.network.profile(input: x.baseAddress!, output: y.baseAddress!, workspace: workspace,
                                                     runs: options.iterations).map {
                        OpProfile(label: $0.label, implementation: $0.implementation, flops: $0.flops,
                                  milliseconds: Statistics.median($0.samples))
                    }
                }
            }
            log("profiled \(policy.rawValue) on \(threads) thread(s)")
        }
        return result
    }
}
