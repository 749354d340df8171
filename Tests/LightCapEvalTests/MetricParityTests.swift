import Foundation
import XCTest
@testable import LightCapEval
import LightCapTestSupport

// Compares LightCapEval with pycocoevalcap 1.2's own outputs, written by
// python/lightcap_train/metric_cases.py into $LIGHTCAP_FIXTURES/metrics.

func metricFixture(_ name: String) throws -> [String: Any] {
    guard let dir = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"] else {
        throw XCTSkip("LIGHTCAP_FIXTURES is not set")
    }
    let url = URL(fileURLWithPath: dir).appendingPathComponent("metrics/\(name)")
    guard let data = FileManager.default.contents(atPath: url.path) else {
        XCTFail("missing fixture \(url.path): run python -m lightcap_train.tools.metric_cases")
        throw XCTSkip("fixture missing")
    }
    return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

final class PTBTokenizerParityTests: XCTestCase {
    func testEqualsJavaPTBTokenizerAsPycocoevalcapRunsIt() throws {
        let docs = try XCTUnwrap(try metricFixture("tokenizer.json")["documents"] as? [[String: Any]])
        XCTAssertGreaterThan(docs.count, 10)
        var total = 0, mismatches: [String] = []
        for doc in docs {
            let captions = try XCTUnwrap(doc["captions"] as? [String])
            let expected = try XCTUnwrap(doc["tokenized"] as? [String])
            let got = PTBTokenizer().tokenize(captions)
            for (i, (g, e)) in zip(got, expected).enumerated() {
                total += 1
                if g != e { mismatches.append("\(captions[i].debugDescription)\n   java:  \(e.debugDescription)\n   swift: \(g.debugDescription)") }
            }
        }
        XCTAssertGreaterThan(total, 1000)
        XCTAssert(mismatches.isEmpty, "\(mismatches.count)/\(total) captions differ:\n" + mismatches.prefix(40).joined(separator: "\n"))
    }

    /// The automaton (`rawLines(_:)`) gives what the plain twin gives, every rule tried at every
    /// position (`plainRawLines(_:)`): on the fixture documents and on random ones built from
    /// runs of the units and pieces the rules scan far over, take apart or look ahead at.
    func testAutomatonEqualsThePlainScanner() throws {
        var documents = try XCTUnwrap(try metricFixture("tokenizer.json")["documents"] as? [[String: Any]])
            .map { try XCTUnwrap($0["captions"] as? [String]).joined(separator: "\n") }
        let pieces = ["\u{FFFD}", "\u{0081}", "a", "Z", "7", ".", "-", "@", "/", "'", "\"", " ", "com", "www.", "http://",
                      "\u{00E9}", "$", "&amp;", ":)", "\n", "\u{00AD}", ",", "#", "_", "cannot", "U.S.", "Mr. ", "'s",
                      "n't", "1/2", "&apos;", "<b>", "...", "\u{2019}", "\u{00BD}", "Co. Ltd", "\u{00A0}", "\r",
                      "\u{1F600}", "gonna", "(", "e.g.", "x.com", "3.5", "A"]
        var random = SeededRandom(seed: 47)
        func next(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
        for _ in 0..<600 {
            var doc = ""
            for _ in 0..<next(14) { doc += String(repeating: pieces[next(pieces.count)], count: 1 + next(next(2) == 0 ? 3 : 40)) }
            documents.append(doc)
        }
        for doc in documents {
            XCTAssertEqual(PTBTokenizer().rawLines(doc), PTBTokenizer().plainRawLines(doc), doc.debugDescription)
        }
    }

    /// A long run of units that a rule scans to its end and then rejects (U+FFFD: a likely-URL
    /// host label takes it, no ".com" follows; the tokenizer deletes it unit by unit) costs the
    /// automaton a bounded number of steps per unit, not a run to the end from every position
    /// (quadratic: 20,000 units would be 200 million steps). The scan moves on as the tokenizer
    /// does: past the match, or one unit when nothing matches.
    func testAutomatonIsLinearOnRunsThatRulesRejectAtTheEnd() {
        let run = String(repeating: "\u{FFFD}", count: 20_000)
        for document in [run, "a" + run, "www." + run, String(repeating: "\u{FFFD}.", count: 10_000),
                         String(repeating: "ab.", count: 7_000) + run] {
            let text = Array(document.utf16)
            var scanner = PTBScanner()
            scanner.begin(text)
            var pos = 0
            while pos < text.count { pos = scanner.longestMatch(at: pos)?.end ?? pos + 1 }
            XCTAssertLessThan(scanner.steps, 8 * text.count, document.prefix(6).debugDescription)
        }
    }
}

final class MetricParityTests: XCTestCase {
    struct Case {
        var name: String
        var ids: [String]
        var hyps: [String]
        var refs: [[String]]
        var rawRes: [String: String]
        var rawRefs: CaptionReferences
        var scores: [String: Double]
        var perImage: [String: [Double]]
    }

    func cases() throws -> (cases: [Case], meteor: Bool) {
        let root = try metricFixture("scores.json")
        var out: [Case] = []
        for c in try XCTUnwrap(root["cases"] as? [[String: Any]]) {
            let ids = try XCTUnwrap(c["image_order"] as? [String])
            let tg = try XCTUnwrap(c["tokenized_gts"] as? [String: [String]])
            let tr = try XCTUnwrap(c["tokenized_res"] as? [String: [String]])
            let gts = try XCTUnwrap(c["gts"] as? [String: [String]])
            let res = try XCTUnwrap(c["res"] as? [String: [String]])
            out.append(Case(name: try XCTUnwrap(c["name"] as? String), ids: ids,
                            hyps: ids.map { tr[$0]![0] }, refs: ids.map { tg[$0]! },
                            rawRes: res.mapValues { $0[0] }, rawRefs: CaptionReferences(imageIDs: ids, captions: gts),
                            scores: try XCTUnwrap(c["scores"] as? [String: Double]),
                            perImage: try XCTUnwrap(c["per_image"] as? [String: [Double]])))
        }
        return (out, root["meteor"] as? Bool ?? false)
    }

    func assertClose(_ a: Double, _ b: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a, b, accuracy: 1e-6, what, file: file, line: line)
    }

    func testBleuRougeCiderOnTokenizedCaptions() throws {
        let (cases, _) = try cases()
        XCTAssertGreaterThanOrEqual(cases.count, 8)
        for c in cases {
            let bleu = Bleu().score(hypotheses: c.hyps, references: c.refs)
            for k in 0..<4 {
                assertClose(bleu.corpus[k], c.scores["Bleu_\(k + 1)"]!, "\(c.name) Bleu_\(k + 1)")
                for (i, v) in bleu.perImage[k].enumerated() {
                    assertClose(v, c.perImage["Bleu_\(k + 1)"]![i], "\(c.name) Bleu_\(k + 1) image \(c.ids[i])")
                }
            }
            let rouge = Rouge().score(hypotheses: c.hyps, references: c.refs)
            assertClose(rouge.mean, c.scores["ROUGE_L"]!, "\(c.name) ROUGE_L")
            for (i, v) in rouge.perImage.enumerated() { assertClose(v, c.perImage["ROUGE_L"]![i], "\(c.name) ROUGE_L \(i)") }
            let cider = CiderD().score(hypotheses: c.hyps, references: c.refs)
            assertClose(cider.mean, c.scores["CIDEr"]!, "\(c.name) CIDEr")
            for (i, v) in cider.perImage.enumerated() { assertClose(v, c.perImage["CIDEr"]![i], "\(c.name) CIDEr \(i)") }
        }
    }

    func testWholeEvaluationFromRawCaptions() throws {
        let (cases, _) = try cases()
        for c in cases {
            let report = try CaptionEvaluator(meteor: false).evaluate(references: c.rawRefs, results: c.rawRes)
            XCTAssertEqual(report.imageIDs, c.ids, c.name)
            for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
                assertClose(try XCTUnwrap(report[name]), c.scores[name]!, "\(c.name) \(name)")
            }
            XCTAssertEqual(report.scores.map(\.name), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"])
            XCTAssert(report.unavailable.contains { $0.name == "SPICE" })
        }
    }

    func testMeteorThroughJavaWhenPresent() throws {
        let (cases, meteorInFixture) = try cases()
        guard meteorInFixture else { throw XCTSkip("the fixtures were written without Java") }
        guard case .success(let meteor) = Meteor.locate() else {
            return XCTFail("the fixtures have METEOR but LightCapEval cannot find Java and the jar")
        }
        let results = try meteor.score(sets: cases.map { ($0.hyps, $0.refs) })
        for (c, (score, per)) in zip(cases, results) {
            assertClose(score, c.scores["METEOR"]!, "\(c.name) METEOR")
            for (i, v) in per.enumerated() { assertClose(v, c.perImage["METEOR"]![i], "\(c.name) METEOR \(i)") }
        }
    }
}
