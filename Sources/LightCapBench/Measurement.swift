// What every benchmark measures with: clocks (wall, thread CPU, process CPU), the median and
// percentiles of samples, and the process's resident memory. Benchmarks are not tests: their
// numbers depend on the machine and its load; report them beside a peer run in the same process
// or script.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Clocks, in milliseconds or seconds.
public enum Clock {
    /// Wall-clock milliseconds since an arbitrary start (monotonic).
    public static func wallMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

    /// CPU milliseconds used by the calling thread (steadier than wall time on a shared machine).
    public static func threadCPUMs() -> Double { cpuSeconds(CLOCK_THREAD_CPUTIME_ID) * 1e3 }

    /// CPU seconds used by this process (all threads).
    public static func processCPUSeconds() -> Double { cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) }

    private static func cpuSeconds(_ clock: clockid_t) -> Double {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// The milliseconds `body` takes by `clock` (wall by default).
    public static func time(_ clock: () -> Double = wallMs, _ body: () throws -> Void) rethrows -> Double {
        let start = clock()
        try body()
        return clock() - start
    }
}

/// Summaries of timing samples.
public enum Statistics {
    /// The median (the mean of the two middle values for an even count); NaN when empty.
    public static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// The nearest-rank percentile, q in [0, 1]; NaN when empty.
    public static func percentile(_ xs: [Double], _ q: Double) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        let rank = Int((q * Double(s.count)).rounded(.up)) - 1
        return s[min(max(rank, 0), s.count - 1)]
    }

    /// The median of `runs` timings of `body` by `clock`, after one untimed warm-up run.
    public static func medianTime(_ runs: Int, clock: () -> Double = Clock.threadCPUMs, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<max(runs, 1) { times.append(try Clock.time(clock, body)) }
        return median(times)
    }
}

/// Process memory from /proc (Linux; 0 elsewhere).
public enum Memory {
    static func status(_ key: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return kb / 1024
        }
        return 0
    }
    /// Current resident set, MB.
    public static func residentMB() -> Double { status("VmRSS") }
    /// Peak resident set since start or the last `resetPeak`, MB.
    public static func peakMB() -> Double { status("VmHWM") }
    /// Resets the peak resident set to the current one (writes 5 to /proc/self/clear_refs).
    public static func resetPeak() {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }
}
