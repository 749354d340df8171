import Foundation

// ROUGE-L as pycocoevalcap 1.2 computes it (rouge.py): F-measure with beta = 1.2 from the
// longest common subsequence, taking the best precision and the best recall over the
// references separately; captions split on single spaces (so an empty caption is one empty
// word, as in pycocoevalcap); the corpus score is the mean over images.

/// ROUGE-L over tokenized captions.
public struct Rouge: Sendable {
    public let beta: Double

    public init(beta: Double = 1.2) { self.beta = beta }

    /// The mean score and the per-image scores.
    public func score(hypotheses: [String], references: [[String]]) -> (mean: Double, perImage: [Double]) {
        precondition(hypotheses.count == references.count, "one hypothesis per image")
        let perImage = zip(hypotheses, references).map { imageScore($0, $1) }
        return (perImage.isEmpty ? .nan : Self.mean(perImage), perImage)
    }

    /// ROUGE-L of one caption against its references.
    public func imageScore(_ hypothesis: String, _ references: [String]) -> Double {
        let c = hypothesis.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        var precMax = 0.0, recMax = 0.0
        for ref in references {
            let r = ref.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            let lcs = Double(Self.lcsLength(r, c))
            precMax = max(precMax, lcs / Double(c.count))
            recMax = max(recMax, lcs / Double(r.count))
        }
        guard precMax != 0 && recMax != 0 else { return 0 }
        return ((1 + beta * beta) * precMax * recMax) / (recMax + beta * beta * precMax)
    }

    static func lcsLength(_ a: [String], _ b: [String]) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return 0 }
        var prev = Array(repeating: 0, count: b.count + 1)
        var cur = prev
        for i in 1...a.count {
            for j in 1...b.count {
                cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : max(prev[j], cur[j - 1])
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }

    /// NumPy's mean (pairwise summation), so sums agree with pycocoevalcap to the last bits.
    static func mean(_ x: [Double]) -> Double { pairwiseSum(x[...]) / Double(x.count) }

    private static func pairwiseSum(_ x: ArraySlice<Double>) -> Double {
        if x.count <= 128 { return x.reduce(0, +) }
        let mid = x.startIndex + x.count / 2
        return pairwiseSum(x[..<mid]) + pairwiseSum(x[mid...])
    }
}
