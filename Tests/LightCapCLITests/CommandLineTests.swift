import Foundation
import XCTest

// Runs the built `lightcap` executable as a user would. Captioning uses the tiny model that
// python -m lightcap_train.tools.fixtures writes ($LIGHTCAP_FIXTURES/tiny/model, random weights);
// eval is checked against pycocoevalcap's scores ($LIGHTCAP_FIXTURES/metrics/scores.json).

final class CommandLineTests: LightCapCLITestCase {
    func fixtures() throws -> URL {
        guard let dir = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"] else { throw XCTSkip("LIGHTCAP_FIXTURES is not set") }
        return URL(fileURLWithPath: dir)
    }

    func tinyModel() throws -> String {
        let model = try fixtures().appendingPathComponent("tiny/model")
        guard FileManager.default.fileExists(atPath: model.appendingPathComponent("config.json").path) else {
            XCTFail("missing \(model.path): run python -m lightcap_train.tools.fixtures")
            throw XCTSkip("fixture missing")
        }
        return model.path
    }

    /// A scratch copy of examples/ (3 scene PNGs).
    func scratchImages() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in ["scene1.png", "scene2.png", "scene3.png"] {
            try FileManager.default.copyItem(at: Self.packageRoot.appendingPathComponent("examples/\(name)"),
                                             to: dir.appendingPathComponent(name))
        }
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    // MARK: help and bad use

    func testHelpForEverySubcommand() throws {
        for sub in [[], ["caption"], ["eval"], ["bench"], ["inspect"]] {
            let r = try lightcap(sub + ["--help"])
            XCTAssertEqual(r.status, 0, "\(sub) --help")
            XCTAssert(r.stdout.contains("USAGE"), "\(sub) --help prints usage")
        }
    }

    func testBadUseIsAClearError() throws {
        var r = try lightcap(["eval", "--results", "x.json"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--annotations"), r.stderr)
        r = try lightcap(["caption"])
        XCTAssertNotEqual(r.status, 0)
        r = try lightcap(["caption", "/no/such/image.png", "--model", "/no/such/model"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("/no/such/image.png"), r.stderr)
        r = try lightcap(["caption", Self.packageRoot.appendingPathComponent("examples").path, "--model", "/no/such/model"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("no model directory at /no/such/model"), r.stderr)
        r = try lightcap(["caption", "x.png", "--beam", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--beam"), r.stderr)
        r = try lightcap(["eval", "--annotations", "/no/such.json", "--results", "/no/such2.json"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("/no/such.json"), r.stderr)
        r = try lightcap(["frobnicate"])
        XCTAssertNotEqual(r.status, 0)
        r = try lightcap(["caption", "x.png", "--convolutions", "fft"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--convolutions") && r.stderr.contains("lightcap-winograd"), r.stderr)
        r = try lightcap(["caption", "x.png", "--fusion-weights", "int4"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--fusion-weights") && r.stderr.contains("int8"), r.stderr)
    }

    /// The committed model captions the examples the same with LightCap's Winograd backbone and
    /// with INT8 fusion weights.
    func testWinogradConvolutionsAndInt8FusionWeightsGiveTheSameCaptions() throws {
        let examples = Self.packageRoot.appendingPathComponent("examples").path
        func captions(_ flags: [String]) throws -> [String] {
            let r = try lightcap(["caption", examples, "--format", "jsonl"] + flags, cwd: Self.packageRoot)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try r.stdout.split(separator: "\n").map {
                try XCTUnwrap((JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["caption"] as? String)
            }
        }
        let exact = try captions([])
        XCTAssertFalse(exact.isEmpty)
        XCTAssertEqual(try captions(["--convolutions", "lightcap-winograd"]), exact)
        XCTAssertEqual(try captions(["--fusion-weights", "int8"]), exact)
    }

    /// `lightcap quantize`: the committed model with an INT8 trunk captions the examples as the
    /// F32 one does (calibrated on those same three images here: the command's plumbing, not
    /// the quality budget, which scripts/quality_budget.py measures on held-out images); the
    /// output is a new directory, never an existing one, never quantized twice.
    func testQuantizeWritesAnInt8ModelThatCaptionsTheExamples() throws {
        let examples = Self.packageRoot.appendingPathComponent("examples").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-int8-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        var r = try lightcap(["quantize", "models/default", out.path, "--calibration", examples], cwd: Self.packageRoot)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssert(r.stdout.contains("quantized 16 trunk convolutions on 3 calibration image(s)"), r.stdout)
        func captions(_ model: String) throws -> [String] {
            let r = try lightcap(["caption", examples, "--format", "jsonl", "--model", model], cwd: Self.packageRoot)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try r.stdout.split(separator: "\n").map {
                try XCTUnwrap((JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["caption"] as? String)
            }
        }
        XCTAssertEqual(try captions(out.path), try captions("models/default"))
        r = try lightcap(["inspect", out.path, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssert(r.stdout.contains("\"I8\""), r.stdout)
        r = try lightcap(["inspect", out.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssert(r.stdout.contains("INT8 trunk: 16 INT8 convolutions"), r.stdout)
        // Refusals, each naming the problem; the existing output is untouched, nothing else written.
        let refusals: [([String], String)] = [
            (["models/default", out.path, "--calibration", examples], "exists"),
            ([out.path, out.path + "-again", "--calibration", examples], "already int8"),
            (["models/default", out.path + "-bad", "--calibration", examples, "--keep-f32", "layer7"], "layer7"),
            (["models/default", out.path + "-bad"], "--calibration"),
            (["models/default", out.path + "-bad", "--calibration", examples, "--count", "100000"], "--count"),
        ]
        for (arguments, words) in refusals {
            r = try lightcap(["quantize"] + arguments, cwd: Self.packageRoot)
            XCTAssertNotEqual(r.status, 0, words)
            XCTAssert(r.stderr.contains(words), r.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path + "-bad"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path + "-again"))
    }

    // MARK: caption

    func testCaptionFolderAsJSONLines() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let r = try lightcap(["caption", dir.path, "--model", model, "--format", "jsonl", "--beam", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        for (i, line) in lines.enumerated() {
            let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            XCTAssertEqual(obj["path"] as? String, dir.appendingPathComponent("scene\(i + 1).png").path)
            XCTAssertNotNil(obj["caption"] as? String)
            XCTAssertNotNil(obj["score"] as? Double)
            let concepts = try XCTUnwrap(obj["concepts"] as? [[String: Any]])
            XCTAssertFalse(concepts.isEmpty)
            XCTAssertNotNil(concepts[0]["name"] as? String)
            let timings = try XCTUnwrap(obj["timings"] as? [String: Double])
            for stage in ["decode", "preprocess", "backbone", "concepts", "fusion"] { XCTAssertNotNil(timings[stage], stage) }
        }
        // json: one array with the same captions; text: "path: caption".
        let j = try lightcap(["caption", dir.path, "--model", model, "--format", "json", "--beam", "1"])
        let array = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(array.count, 3)
        let t = try lightcap(["caption", dir.path, "--model", model, "--beam", "1"])
        let first = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssert(t.stdout.hasPrefix("\(dir.path)/scene1.png: \(first["caption"] as! String)\n"), t.stdout)
    }

    func testFailingFileDoesNotStopTheBatch() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let bad = dir.appendingPathComponent("broken.png")
        try Data("not an image".utf8).write(to: bad)
        let good = dir.appendingPathComponent("scene2.png").path
        let r = try lightcap(["caption", bad.path, good, "--model", model, "--format", "jsonl", "--beam", "1"])
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.stderr.contains("broken.png"), r.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 1)
        XCTAssert(r.stdout.contains("scene2.png"))
    }

    /// Batches (of 2, and the default) give the captions of one at a time, in order, a failing
    /// file failing alone in the middle of a batch.
    func testBatchesGiveTheCaptionsOfOneAtATime() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let bad = dir.appendingPathComponent("broken.png")
        try Data("not an image".utf8).write(to: bad)
        let files = ["scene1.png", "broken.png", "scene2.png", "scene3.png", "scene1.png"].map { dir.appendingPathComponent($0).path }
        func captions(_ extra: [String]) throws -> [String] {
            let r = try lightcap(["caption"] + files + ["--model", model, "--beam", "1"] + extra)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.stderr.components(separatedBy: "broken.png:").count, 2, r.stderr)
            return r.stdout.split(separator: "\n").map(String.init)
        }
        let alone = try captions(["--batch", "1"])
        XCTAssertEqual(alone.count, 4)
        XCTAssertEqual(alone.map { $0.components(separatedBy: ": ")[0] }, files.filter { !$0.hasSuffix("broken.png") })
        XCTAssertEqual(try captions(["--batch", "2"]), alone)
        XCTAssertEqual(try captions([]), alone)
        let r = try lightcap(["caption", files[0], "--model", model, "--batch", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--batch must lie in 1...256"), r.stderr)
    }

    func testPathsFromStandardInput() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let list = dir.appendingPathComponent("scene3.png").path + "\n" + dir.appendingPathComponent("scene1.png").path + "\n"
        let r = try lightcap(["caption", "-", "--model", model, "--format", "jsonl", "--beam", "1"], stdin: list)
        XCTAssertEqual(r.status, 0, r.stderr)
        let paths = try r.stdout.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["path"] as? String
        }
        XCTAssertEqual(paths, [dir.appendingPathComponent("scene3.png").path, dir.appendingPathComponent("scene1.png").path])
    }

    func testSidecarsNeverOverwriteUnlessAsked() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let kept = dir.appendingPathComponent("scene1.txt")
        try Data("mine\n".utf8).write(to: kept)
        var r = try lightcap(["caption", dir.path, "--model", model, "--sidecar", "txt", "--beam", "1", "--format", "jsonl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOf: kept, encoding: .utf8), "mine\n")
        XCTAssert(r.stderr.contains("scene1.txt"), r.stderr)
        let captions = try r.stdout.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["caption"] as! String
        }
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("scene2.txt"), encoding: .utf8), captions[1] + "\n")
        r = try lightcap(["caption", dir.appendingPathComponent("scene1.png").path, "--model", model, "--sidecar", "txt",
                          "--overwrite", "--beam", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOf: kept, encoding: .utf8), captions[0] + "\n")
    }

    // MARK: eval, inspect, bench

    func testEvalEqualsPycocoevalcap() throws {
        let url = try fixtures().appendingPathComponent("metrics/scores.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let cases = root["cases"] as? [[String: Any]] else {
            return XCTFail("missing \(url.path): run python -m lightcap_train.tools.metric_cases")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for c in cases where ["edge", "scenes_40x3"].contains(c["name"] as? String) {
            let order = c["image_order"] as! [String]
            let gts = c["gts"] as! [String: [String]]
            let res = c["res"] as! [String: [String]]
            var anns: [[String: Any]] = []
            for id in order { for cap in gts[id]! { anns.append(["image_id": Int(id)!, "id": anns.count, "caption": cap]) } }
            let annotations = ["images": order.map { ["id": Int($0)!] }, "annotations": anns] as [String: Any]
            let results = order.map { ["image_id": Int($0)!, "caption": res[$0]![0]] as [String: Any] }
            let a = dir.appendingPathComponent("ann.json"), r = dir.appendingPathComponent("res.json")
            try JSONSerialization.data(withJSONObject: annotations).write(to: a)
            try JSONSerialization.data(withJSONObject: results).write(to: r)
            let run = try lightcap(["eval", "--annotations", a.path, "--results", r.path, "--format", "json", "--no-meteor"])
            XCTAssertEqual(run.status, 0, run.stderr)
            let got = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
            let expected = c["scores"] as! [String: Double]
            for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
                XCTAssertEqual(try XCTUnwrap(got[name] as? Double), expected[name]!, accuracy: 1e-6, "\(c["name"]!) \(name)")
            }
            XCTAssertNotNil((got["unavailable"] as? [String: String])?["SPICE"])
        }
    }

    func testEvalCaptionsImagesFirst() throws {
        let model = try tinyModel()
        let dir = try scratchImages()
        let saved = dir.appendingPathComponent("results.json")
        let r = try lightcap(["eval", "--annotations", Self.packageRoot.appendingPathComponent("examples/captions.json").path,
                              "--images", dir.path, "--model", model, "--beam", "1", "--no-meteor", "--format", "json",
                              "--save-results", saved.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(got["images"] as? Int, 3)
        for name in ["Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"] { XCTAssertNotNil(got[name] as? Double, name) }
        let results = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: saved)) as? [[String: Any]])
        XCTAssertEqual(results.compactMap { $0["image_id"] as? Int }.sorted(), [0, 1, 2])
        // The saved results score the same through --results.
        let again = try lightcap(["eval", "--annotations", Self.packageRoot.appendingPathComponent("examples/captions.json").path,
                                  "--results", saved.path, "--no-meteor", "--format", "json"])
        let got2 = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(got2["CIDEr"] as? Double, got["CIDEr"] as? Double)
    }

    func testInspectCountsEveryParameter() throws {
        let model = try tinyModel()
        let r = try lightcap(["inspect", model, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let params = try XCTUnwrap(obj["parameters"] as? [String: Int])
        XCTAssertEqual(params.filter { $0.key != "total" }.values.reduce(0, +), params["total"])
        for part in ["visual", "concepts", "modulator", "bert.embeddings", "bert.encoder", "image_projection", "heads"] {
            XCTAssertGreaterThan(params[part] ?? 0, 0, part)
        }
        XCTAssert((obj["load"] as? String)?.hasPrefix("ok") == true)
        XCTAssertEqual((obj["dtypes"] as? [String: Int])?["F32"], obj["tensors"] as? Int)
    }

    func testBenchReportsStages() throws {
        let model = try tinyModel()
        let r = try lightcap(["bench", "--model", model, "--runs", "2", "--warmup", "1", "--beam", "1", "--json",
                              "--image", Self.packageRoot.appendingPathComponent("examples/scene1.png").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let stages = try XCTUnwrap(obj["stages"] as? [String: [String: Double]])
        for s in ["decode", "preprocess", "backbone", "concepts", "fusion", "total"] {
            let st = try XCTUnwrap(stages[s], s)
            XCTAssertLessThanOrEqual(st["median_ms"]!, st["p90_ms"]!)
        }
    }

    /// `bench int8-convolutions` runs every convolution of the RN50 trunk through oneDNN in F32
    /// and INT8 (the u8 x s8 primitive is created and executed on this CPU, whatever its ISA).
    func testInt8ConvolutionBenchmarkCoversTheTrunk() throws {
        let r = try lightcap(["bench", "int8-convolutions", "--runs", "1", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(rows.count, 55, "3 stem + 16 blocks x 3 + 4 downsamples")
        let flops = rows.compactMap { $0["flops"] as? Double }.reduce(0, +)
        XCTAssertEqual(flops / 1e9, 10.73, accuracy: 0.01, "the trunk's GFLOP")
        for row in rows {
            XCTAssertGreaterThan(row["f32Ms"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(row["int8Ms"] as? Double ?? 0, 0)
            XCTAssertFalse((row["int8Kernel"] as? String ?? "").isEmpty)
        }
    }
}
