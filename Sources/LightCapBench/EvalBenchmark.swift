// EvalBenchmark (`lightcap bench eval`): the caption metrics' time on an annotations file and a
// results file (scripts/bench_eval.py times pycocoevalcap on the same files in the same run).

import Foundation
import LightCapEval

public enum EvalBenchmark {
    /// Wall milliseconds (median of the runs) of loading both files and of scoring them
    /// (PTB tokenization, BLEU-1..4, ROUGE-L, CIDEr-D; METEOR left out: it runs Java), and the scores.
    public struct Report: Codable, Sendable {
        public var images: Int
        public var runs: Int
        public var loadMs: Double
        public var scoreMs: Double
        public var scores: [String: Double]
    }

    public static func run(annotations: URL, results: URL, runs: Int = 3) throws -> Report {
        var load: [Double] = [], score: [Double] = []
        var report: EvaluationReport?
        var images = 0
        for _ in 0..<max(runs, 1) {
            var references: CaptionReferences?, captions: [String: String] = [:]
            load.append(try Clock.time {
                references = try CaptionReferences.load(cocoAnnotations: annotations)
                captions = try CaptionReferences.loadResults(results)
            })
            score.append(try Clock.time {
                report = try CaptionEvaluator(meteor: false).evaluate(references: references!, results: captions)
            })
            images = captions.count
        }
        let scores = Dictionary(report!.scores.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        return Report(images: images, runs: max(runs, 1), loadMs: Statistics.median(load), scoreMs: Statistics.median(score),
                      scores: scores)
    }
}
