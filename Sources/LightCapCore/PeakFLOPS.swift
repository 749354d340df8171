// PeakFLOPS: the FP32 peak of this machine, measured with an FMA loop (CPeakFLOPS), so
// benchmarks can report the fraction of peak they reach. Not used by the engine itself.

import CPeakFLOPS
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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

    /// CPU seconds used by this process so far.
    public static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
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
            let cpu0 = processCPUSeconds()
            let start = DispatchTime.now().uptimeNanoseconds
            DispatchQueue.concurrentPerform(iterations: max(threads, 1)) { _ in
                var s: Float = 0
                flops.add(lightcap_fma_loop(iterations, &s))
                flops.keep(s)
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let cpu = processCPUSeconds() - cpu0
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
