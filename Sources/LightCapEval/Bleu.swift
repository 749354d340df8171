import Foundation

// BLEU-1..4 as pycocoevalcap 1.2 computes it (its bleu_scorer.py): corpus-level clipped
// n-gram precisions with its tiny/small constants, the "closest" reference length (ties: the
// shorter reference), the brevity penalty on the corpus lengths; and per-image scores.

/// BLEU-1..4 over tokenized captions (words split on whitespace).
public struct Bleu: Sendable {
    public let n: Int

    public init(n: Int = 4) { self.n = n }

    /// Corpus BLEU-1...n and per-image BLEU-1...n (`perImage[k][i]` for image i).
    public struct Result: Sendable {
        public var corpus: [Double]
        public var perImage: [[Double]]
    }

    /// Scores `hypotheses[i]` against `references[i]` (each a tokenized caption).
    public func score(hypotheses: [String], references: [[String]]) -> Result {
        precondition(hypotheses.count == references.count, "one hypothesis per image")
        let small = 1e-9, tiny = 1e-15
        var perImage = Array(repeating: [Double](), count: n)
        var totalTest = 0, totalRef = 0
        var totalGuess = Array(repeating: 0, count: n), totalCorrect = Array(repeating: 0, count: n)

        for (hyp, refs) in zip(hypotheses, references) {
            // References: lengths and the clipping counts (max count of each n-gram).
            var refLengths: [Int] = []
            var maxCounts: [NGram: Int] = [:]
            for ref in refs {
                let (len, counts) = NGram.count(ref.pythonSplit(), upTo: n)
                refLengths.append(len)
                for (g, c) in counts { maxCounts[g] = max(maxCounts[g] ?? 0, c) }
            }
            let (testLen, counts) = NGram.count(hyp.pythonSplit(), upTo: n)
            // "closest": the reference length nearest the hypothesis length, the shorter on ties.
            let refLen = refLengths.min { (abs($0 - testLen), $0) < (abs($1 - testLen), $1) } ?? 0
            let guess = (1...n).map { max(0, testLen - $0 + 1) }
            var correct = Array(repeating: 0, count: n)
            for (g, c) in counts { correct[g.words.count - 1] += min(maxCounts[g] ?? 0, c) }

            totalTest += testLen
            totalRef += refLen
            var bleu = 1.0
            for k in 0..<n {
                totalGuess[k] += guess[k]
                totalCorrect[k] += correct[k]
                bleu *= (Double(correct[k]) + tiny) / (Double(guess[k]) + small)
                perImage[k].append(Foundation.pow(bleu, 1.0 / Double(k + 1)))
            }
            let ratio = (Double(testLen) + tiny) / (Double(refLen) + small)
            if ratio < 1 {
                for k in 0..<n { perImage[k][perImage[k].count - 1] *= Foundation.exp(1 - 1 / ratio) }
            }
        }

        var corpus: [Double] = []
        var bleu = 1.0
        for k in 0..<n {
            bleu *= (Double(totalCorrect[k]) + tiny) / (Double(totalGuess[k]) + small)
            corpus.append(Foundation.pow(bleu, 1.0 / Double(k + 1)))
        }
        let ratio = (Double(totalTest) + tiny) / (Double(totalRef) + small)
        if ratio < 1 {
            for k in 0..<n { corpus[k] *= Foundation.exp(1 - 1 / ratio) }
        }
        return Result(corpus: corpus, perImage: perImage)
    }
}

/// An n-gram of words.
struct NGram: Hashable, Sendable {
    let words: [String]

    /// The number of words and the count of every n-gram of length 1...n.
    static func count(_ words: [String], upTo n: Int) -> (Int, [NGram: Int]) {
        var counts: [NGram: Int] = [:]
        for k in 1...n where words.count >= k {
            for i in 0...(words.count - k) { counts[NGram(words: Array(words[i..<(i + k)])), default: 0] += 1 }
        }
        return (words.count, counts)
    }
}
