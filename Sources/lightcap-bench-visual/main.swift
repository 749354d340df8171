// lightcap-bench-visual: times the CLIP ResNet trunk (base, 224) on random or given weights.
//   swift run -c release lightcap-bench-visual [--weights FILE] [--threads 1,2]
//       [--algorithms direct,winograd,winograd4x4] [--iterations 20] [--warmup 3] [--json]
//   --memory [--runs N]: only load and run N times (default 2) on 1 thread, then print the
//             load time and the peak resident memory (MB) of this process (the backbone alone).
//   --profile: the time of every op inside the network (median of --iterations runs) on the
//             first --threads count, per algorithm, with GFLOPS, % of the FMA peak and a summary
//             by kind of op.

import Foundation
import LightCapCore
import LightCapModel

var options = VisualBenchmark.Options()
var json = false
var memoryOnly = false
var memoryRuns = 2
var profileOnly = false
var args = Array(CommandLine.arguments.dropFirst())

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("lightcap-bench-visual: \(message)\n".utf8))
    exit(2)
}

func int(_ s: Substring, _ flag: String) -> Int {
    guard let v = Int(s) else { fail("bad \(flag) value '\(s)'") }
    return v
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

func algorithm(_ s: Substring) -> ConvolutionAlgorithm {
    guard let a = ConvolutionAlgorithm(rawValue: String(s)) else { fail("unknown algorithm '\(s)' (\(ConvolutionAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")))") }
    return a
}

while !args.isEmpty {
    let flag = args.removeFirst()
    func value() -> String {
        guard !args.isEmpty else { fail("\(flag) needs a value") }
        return args.removeFirst()
    }
    switch flag {
    case "--weights": options.weights = URL(fileURLWithPath: value())
    case "--threads": options.threads = value().split(separator: ",").map { int($0, flag) }
    case "--algorithms":
        options.algorithms = value().split(separator: ",").map(algorithm)
    case "--iterations": options.iterations = int(Substring(value()), flag)
    case "--warmup": options.warmup = int(Substring(value()), flag)
    case "--json": json = true
    case "--memory": memoryOnly = true
    case "--runs": memoryRuns = int(Substring(value()), flag)
    case "--profile": profileOnly = true
    case "--help", "-h":
        print("usage: lightcap-bench-visual [--weights FILE] [--threads 1,2] [--algorithms direct,direct-onednn,winograd,winograd4x4,auto] [--iterations N] [--warmup N] [--json] [--memory [--runs N]] [--profile]")
        exit(0)
    default: fail("unknown option \(flag)")
    }
}

do {
    if memoryOnly {
        guard let weights = options.weights else { fail("--memory needs --weights (write them with a normal run or scripts/bench_visual.py)") }
        Threads.set(1)
        let before = VisualBenchmark.Memory.residentMB()
        let start = Date()
        let store = WeightStore(file: try SafetensorsFile(url: weights))
        let model = try CLIPResNet(store, configuration: options.configuration, algorithm: options.algorithms.first ?? .direct)
        try store.finish()
        let loadMs = Date().timeIntervalSince(start) * 1000
        let pixels = [Float](repeating: 0.5, count: 3 * model.imageSize * model.imageSize)
        let workspace = try model.makeWorkspace()
        for _ in 0..<memoryRuns { _ = try model.grid(pixels: pixels, workspace: workspace) }
        let line = String(format: "{\"rss_before_mb\": %.1f, \"peak_rss_mb\": %.1f, \"rss_after_mb\": %.1f, \"load_ms\": %.1f}",
                          before, VisualBenchmark.Memory.peakMB(), VisualBenchmark.Memory.residentMB(), loadMs)
        print(line)
        exit(0)
    }
    if profileOnly {
        let threads = options.threads.first ?? 1
        let peak = PeakFLOPS.measure(threads: threads).wallGflops
        let profiles = try VisualBenchmark.profile(options) { if !json { print($0) } }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(profiles), as: UTF8.self))
            exit(0)
        }
        print(String(format: "FMA peak %.1f GFLOPS on %d thread(s); median of %d runs per op", peak, threads, options.iterations))
        for algorithm in options.algorithms.map(\.rawValue) {
            guard let ops = profiles[algorithm] else { continue }
            print("\n\(algorithm)\n" + pad("op", 26) + " " + pad("implementation", 28) + "      ms   GFLOPS  % peak")
            var kinds: [String: (ms: Double, flops: Int)] = [:]
            for op in ops {
                let gflops = op.flops > 0 ? Double(op.flops) / op.milliseconds / 1e6 : 0
                print(pad(op.label, 26) + " " + pad(op.implementation, 28)
                      + String(format: " %7.3f  %7.1f  %5.1f%%", op.milliseconds, gflops, op.flops > 0 ? 100 * gflops / peak : 0))
                let kind = op.flops == 0 ? (op.label.contains("pool") || op.label.hasSuffix("downsample.-1") ? "pool" : "reorder")
                    : op.implementation.contains("wino") ? "winograd 3x3" : op.implementation.contains("1x1") ? "1x1" : "direct 3x3"
                kinds[kind, default: (0, 0)].ms += op.milliseconds
                kinds[kind, default: (0, 0)].flops += op.flops
            }
            let total = ops.reduce(0) { $0 + $1.milliseconds }
            for (kind, v) in kinds.sorted(by: { $0.value.ms > $1.value.ms }) {
                print("  " + pad(kind, 14) + String(format: " %8.2f ms (%4.1f%%)  %6.2f GFLOP  %6.1f GFLOPS", v.ms, 100 * v.ms / total,
                             Double(v.flops) / 1e9, v.flops > 0 ? Double(v.flops) / v.ms / 1e6 : 0))
            }
            print(String(format: "  total          %8.2f ms", total))
        }
        exit(0)
    }
    let report = try VisualBenchmark.run(options) { if !json { print($0) } }
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        print(String(format: "convolutions: %.2f GFLOP; packed weights %.1f MB; FMA peak probe: %@", report.convolutionGflop, report.packedWeightMB, report.fmaISA))
        print(String(format: "load: first %.1f ms; median of 3: %@", report.firstLoadMs,
                     report.loadMs.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f ms", $0.key, $0.value) }.joined(separator: ", ")))
        print(String(format: "resident memory: %.1f MB before load, peak %.1f MB", report.rssBeforeMB, report.peakRSSMB))
        print("wall clock: median of the runs, peak by wall clock; CPU: process CPU time per run, peak by CPU time")
        print("algorithm  threads  median ms  GFLOPS  % peak  |  CPU ms  GFLOPS  % peak  |  rel. error vs direct")
        for r in report.rows {
            print(String(format: "%-9@  %7d  %9.2f  %6.1f  %5.1f%%  |  %6.2f  %6.1f  %5.1f%%  |  %.2e", r.algorithm, r.threads,
                         r.medianMs, r.gflops, 100 * r.fractionOfPeak, r.cpuMs, r.cpuGflops, 100 * r.cpuGflops / max(r.cpuPeakGflops, 1e-9),
                         r.relativeErrorVsDirect))
        }
    }
} catch {
    fail("\(error)")
}
