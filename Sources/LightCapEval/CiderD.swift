import Foundation

// CIDEr-D as pycocoevalcap 1.2 computes it (cider_scorer.py): TF-IDF vectors of 1..4-grams
// with document frequencies counted over the reference sets of the evaluated images and
// log(number of images) as the log reference count; per n, the cosine with each reference
// after clipping the hypothesis weights at the reference's (min(h, r) * r), times the
// Gaussian length penalty exp(-delta^2 / (2 sigma^2)); the mean over n, averaged over the
// references, times 10. pycocoevalcap's "length" for the penalty counts bigrams (it
// tests `n == 1` on a 0-based n), which is kept as is.

/// CIDEr-D over tokenized captions.
public struct CiderD: Sendable {
    public let n: Int
    public let sigma: Double

    public init(n: Int = 4, sigma: Double = 6.0) {
        self.n = n
        self.sigma = sigma
    }

    /// The mean score and the per-image scores.
    public func score(hypotheses: [String], references: [[String]]) -> (mean: Double, perImage: [Double]) {
        precondition(hypotheses.count == references.count, "one hypothesis per image")
        let refCounts = references.map { $0.map { NGram.count($0.pythonSplit(), upTo: n).1 } }
        let hypCounts = hypotheses.map { NGram.count($0.pythonSplit(), upTo: n).1 }

        // Document frequency: in how many images' reference sets each n-gram appears.
        var df: [NGram: Double] = [:]
        for refs in refCounts {
            var seen = Set<NGram>()
            for r in refs { seen.formUnion(r.keys) }
            for g in seen { df[g, default: 0] += 1 }
        }
        let logRefCount = Foundation.log(Double(references.count))

        func vector(_ counts: [NGram: Int]) -> (vec: [[NGram: Double]], norm: [Double], length: Int) {
            var vec = Array(repeating: [NGram: Double](), count: n)
            var norm = Array(repeating: 0.0, count: n)
            var length = 0
            for (g, tf) in counts {
                let k = g.words.count - 1
                let w = Double(tf) * (logRefCount - Foundation.log(max(1.0, df[g] ?? 0)))
                vec[k][g] = w
                norm[k] += w * w
                if k == 1 { length += tf }
            }
            return (vec, norm.map { $0.squareRoot() }, length)
        }

        var perImage: [Double] = []
        for (hyp, refs) in zip(hypCounts, refCounts) {
            let h = vector(hyp)
            var score = Array(repeating: 0.0, count: n)
            for ref in refs {
                let r = vector(ref)
                let delta = Double(h.length - r.length)
                for k in 0..<n {
                    var val = 0.0
                    for (g, w) in h.vec[k] {
                        let rw = r.vec[k][g] ?? 0
                        val += min(w, rw) * rw
                    }
                    if h.norm[k] != 0 && r.norm[k] != 0 { val /= h.norm[k] * r.norm[k] }
                    val *= Foundation.pow(M_E, -(delta * delta) / (2 * sigma * sigma))
                    score[k] += val
                }
            }
            var avg = score.reduce(0, +) / Double(n)
            avg /= Double(refs.count)
            avg *= 10
            perImage.append(avg)
        }
        return (perImage.isEmpty ? .nan : Rouge.mean(perImage), perImage)
    }
}
