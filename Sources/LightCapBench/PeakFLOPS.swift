// PeakFLOPS: the FP32 peak of this machine, measured with an FMA loop (CPeakFLOPS), so
// benchmarks can report the fraction of peak they reach.

import CPeakFLOPS
import Foundation

/// Measures the FP32 multiply-add peak with independent FMA chains on 1..n threads.
public enum PeakFLOPS {
    /// The vector path of the probe ("avx512f", "avx2+fma" or "scalar").
    public static var isa: String { String(cString: lightcap_fma_isa()) }

    /// A peak measurement: by wall clock, and by CPU time (what `threads` threads would reach
    /// if each had a core to itself: robust to other processes taking turns on the cores).
    public struct Peak: Sendable, Codable {
        public let wallGflops: Double
        public let cpuGflops: Double
    }

    /// The best GFLOPS over `repeats` runs of about `seconds` each, with `threads` threads
    /// running the loop at once (total over threads), by wall clock and by CPU time.
    public static func measure(threads: Int = 1, seconds: Double = 0.2, repeats: Int = 5) -> Peak {
        // Calibrate the iteration count on one thread.
        var sink: Float = 0
        let probe = 200_000
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = lightcap_fma_loop(probe, &sink)
        let probeSeconds = max(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, 1e-6)
        let iterations = max(probe, Int(Double(probe) * seconds / probeSeconds))
        var best = 0.0, bestCPU = 0.0
        for _ in 0..<max(repeats, 1) {
            let flops = Counter()
            let cpu0 = Clock.processCPUSeconds()
            let start = DispatchTime.now().uptimeNanoseconds
            DispatchQueue.concurrentPerform(iterations: max(threads, 1)) { _ in
                var s: Float = 0
                flops.add(lightcap_fma_loop(iterations, &s))
                flops.keep(s)
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let cpu = Clock.processCPUSeconds() - cpu0
            best = max(best, flops.total / elapsed / 1e9)
            bestCPU = max(bestCPU, flops.total / (cpu / Double(max(threads, 1))) / 1e9)
        }
        return Peak(wallGflops: best, cpuGflops: bestCPU)
    }

    private final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var total = 0.0
        private var sink: Float = 0
        func add(_ v: Double) { lock.lock(); total += v; lock.unlock() }
        func keep(_ v: Float) { lock.lock(); sink += v; lock.unlock() }
    }
}
