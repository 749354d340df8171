// Summaries of timing samples, shared by the benchmarks.

public enum Statistics {
    /// The median (the mean of the two middle values for an even count); NaN when empty.
    public static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
