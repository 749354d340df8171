// The COCO readers on broken input: a typed EvalError naming the file, never a crash or a leak.
// (The fuzz target Fuzzing/Sources/FuzzCOCO runs them on mutated files; its findings stay here.)
import Foundation
import LightCapTestSupport
import XCTest
@testable import LightCapEval

final class CocoReaderTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-coco-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: dir)
    }

    func file(_ name: String, _ text: String) -> URL {
        let url = dir.appendingPathComponent(name)
        FileManager.default.createFile(atPath: url.path, contents: Data(text.utf8))
        return url
    }

    /// An empty results or annotation file is "not valid JSON", and reading it costs no memory
    /// (Foundation's Data(contentsOf:) leaks 4 KiB on each empty file).
    func testEmptyFilesAreBadFormatAndLeakNothing() throws {
        let empty = file("empty.json", "")
        XCTAssertThrowsError(try CaptionReferences.loadResults(empty)) {
            XCTAssertEqual($0 as? EvalError, .badFormat(path: empty.path, reason: "not valid JSON"))
        }
        XCTAssertThrowsError(try CaptionReferences.load(cocoAnnotations: empty)) {
            XCTAssertEqual($0 as? EvalError, .badFormat(path: empty.path, reason: "not valid JSON"))
        }
        let growth = ProcessMemory.growth(repeating: 10_000) { _ = try? CaptionReferences.loadResults(empty) }
        XCTAssertLessThan(growth, 16 << 20, "reading empty files leaks")  // 4 KiB a read would be 40 MB
    }

    func testWellFormedFilesAndTheirScores() throws {
        let annotations = file("captions.json", """
            {"images": [{"id": 1}, {"id": "b"}],
             "annotations": [{"image_id": 1, "caption": "a red circle"}, {"image_id": "b", "caption": "two squares"},
                             {"image_id": 1, "caption": "a small red circle"}]}
            """)
        let results = file("results.json", #"[{"image_id": 1, "caption": "a red circle"}, {"image_id": "b", "caption": "squares"}]"#)
        let references = try CaptionReferences.load(cocoAnnotations: annotations)
        XCTAssertEqual(references.imageIDs, ["1", "b"])
        let report = try CaptionEvaluator(meteor: false).evaluate(references: references,
                                                                  results: try CaptionReferences.loadResults(results))
        XCTAssertEqual(report.imageIDs, ["1", "b"])
        XCTAssertTrue(report.scores.allSatisfy { $0.value.isFinite }, "\(report.scores)")
    }
}
