// Fuzzes the COCO readers: the input is cut into an annotation file and a results file
// (Fuzz.separator between them); each is read, and when both are accepted the metrics (BLEU,
// ROUGE-L, CIDEr-D; METEOR is Java and left out) are computed on them, up to 512 bytes of captions:
// the PTB tokenizer costs about 1 ms a byte in this unoptimised, sanitized build, and the ptb
// target fuzzes it on its own.
import Foundation
import FuzzSupport
import LightCapEval

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCOCO(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let parts = Fuzz.split(Fuzz.data(start, count), limit: 2)
    let annotations = Fuzz.file("captions.json", parts[0])
    let results = Fuzz.file("results.json", parts.count > 1 ? parts[1] : Data())
    var references: CaptionReferences?
    var captions: [String: String]?
    do { references = try CaptionReferences.load(cocoAnnotations: annotations) } catch {
        Fuzz.expectTyped(error, [EvalError.self], "annotations")
    }
    do { captions = try CaptionReferences.loadResults(results) } catch {
        Fuzz.expectTyped(error, [EvalError.self], "results")
    }
    if let references, let captions,
       references.captions.values.joined().map(\.utf8.count).reduce(0, +) + captions.values.map(\.utf8.count).reduce(0, +) <= 512 {
        do {
            let report = try CaptionEvaluator(meteor: false).evaluate(references: references, results: captions)
            precondition(report.scores.allSatisfy { $0.value.isFinite }, "a score is not finite: \(report.scores)")
        } catch {
            Fuzz.expectTyped(error, [EvalError.self], "evaluate")
        }
    }
    return 0
}
