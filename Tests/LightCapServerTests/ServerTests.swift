// The HTTP service on a loopback port (LoopbackServer) and its caption batcher.
// The model: models/default when committed, else the tiny fixture model
// ($LIGHTCAP_FIXTURES/tiny/model; a failure when LIGHTCAP_FIXTURES is set and it is missing).

import Foundation
import Hummingbird
import LightCap
import LightCapCore
import LightCapImage
@testable import LightCapServer
import XCTest

/// The model the tests caption with, loaded once.
enum TestModel {
    struct Loaded: Sendable {
        let directory: URL
        let captioner: Captioner
    }

    static let shared: Result<Loaded?, any Error> = Result {
        let fm = FileManager.default
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let committed = root.appendingPathComponent("models/default")
        var directory: URL?
        if fm.fileExists(atPath: committed.appendingPathComponent("config.json").path) {
            directory = committed
        } else if let fixtures = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"] {
            let tiny = URL(fileURLWithPath: fixtures).appendingPathComponent("tiny/model")
            guard fm.fileExists(atPath: tiny.appendingPathComponent("config.json").path) else {
                throw LightCapError.fileNotFound(path: tiny.path + " (LIGHTCAP_FIXTURES is set; run python -m lightcap_train.tools.fixtures)")
            }
            directory = tiny
        }
        guard let directory else { return nil }
        return Loaded(directory: directory, captioner: try Captioner(modelDirectory: directory))
    }

    /// The loaded model; skips when there is none and LIGHTCAP_FIXTURES is unset.
    static func load() throws -> Loaded {
        guard let loaded = try shared.get() else {
            throw XCTSkip("no models/default and LIGHTCAP_FIXTURES is unset")
        }
        return loaded
    }
}

/// A valid 8-bit RGB PNG (stored deflate blocks, real CRC-32 and Adler-32) of a smooth pattern.
func makePNG(width: Int, height: Int) -> Data {
    func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xedb8_8320 : crc >> 1 }
        }
        return ~crc
    }
    var raw: [UInt8] = []
    for y in 0..<height {
        raw.append(0)  // filter: none
        for x in 0..<width {
            raw += [UInt8(x * 255 / max(1, width - 1)), UInt8(y * 255 / max(1, height - 1)), UInt8((x * y) % 256)]
        }
    }
    var zlib: [UInt8] = [0x78, 0x01]
    var offset = 0
    repeat {
        let n = min(65535, raw.count - offset)
        zlib.append(offset + n == raw.count ? 1 : 0)
        zlib += [UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
        zlib += raw[offset..<offset + n]
        offset += n
    } while offset < raw.count
    var a: UInt32 = 1, b: UInt32 = 0
    for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
    zlib += be32(b << 16 | a)
    func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + body
        return be32(UInt32(body.count)) + typed + be32(crc32(typed))
    }
    var png: [UInt8] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
    png += chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [8, 2, 0, 0, 0])
    png += chunk("IDAT", zlib)
    png += chunk("IEND", [])
    return Data(png)
}

final class ServerTests: XCTestCase, @unchecked Sendable {
    let decoder: JSONDecoder = .snake

    /// Runs `body` against the service on a loopback port, configured by `configure`.
    func serve(_ model: TestModel.Loaded, _ configure: (inout ServerConfiguration) -> Void = { _ in },
               _ body: (LoopbackServer) async throws -> Void) async throws {
        let server = try await LoopbackServer { port in
            var configuration = ServerConfiguration(port: port, modelDirectory: model.directory)
            configure(&configuration)
            return try buildApplication(captioner: model.captioner, configuration: configuration)
        }
        do { try await body(server) } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// Asserts a JSON error with `status` whose message contains `fragment`.
    func expectError(_ reply: HTTPReply, _ status: Int, _ fragment: String,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(reply.status, status, reply.text, file: file, line: line)
        XCTAssertEqual(reply.headers["content-type"], "application/json; charset=utf-8", file: file, line: line)
        let error = try decoder.decode(ErrorBody.self, from: reply.body)
        XCTAssertTrue(error.error.contains(fragment), "'\(error.error)' lacks '\(fragment)'", file: file, line: line)
    }

    func caption(_ reply: HTTPReply, file: StaticString = #filePath, line: UInt = #line) throws -> CaptionResponse {
        XCTAssertEqual(reply.status, 200, reply.text, file: file, line: line)
        return try decoder.decode(CaptionResponse.self, from: reply.body)
    }

    func assertSame(_ http: CaptionResponse, _ direct: Caption, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(http.caption, direct.text, file: file, line: line)
        XCTAssertEqual(http.tokens, direct.tokens, file: file, line: line)
        XCTAssertEqual(http.tokenIds, direct.tokenIds, file: file, line: line)
        // Batched decoding runs the rows of several images through the same products: the
        // tokens are the same, the score may differ in the last bits.
        XCTAssertEqual(http.score, direct.score, accuracy: 1e-5, file: file, line: line)
        XCTAssertEqual(http.concepts.map(\.name), direct.concepts.map(\.name), file: file, line: line)
        XCTAssertEqual(http.concepts.map(\.score), direct.concepts.map(\.score), file: file, line: line)
        XCTAssertEqual(Set(http.timings.keys), Set(direct.timings.keys).union(["queue", "total"]), file: file, line: line)
    }

    func testCaptionMatchesDirectCall() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 96, height: 64))
        let d = model.captioner.configuration.decoding
        let session = try model.captioner.makeSession()
        // The defaults are the model's (config.json decoding), as in `lightcap caption`.
        let defaults = try session.caption(imageData: Data(png), options: .init(beamSize: d.beamSize, maxLength: d.maxLength))
        let greedy = try session.caption(imageData: Data(png), options: .init(beamSize: 1, maxLength: d.maxLength))
        let beam = try session.caption(imageData: Data(png), options: .init(beamSize: 3, maxLength: 5))
        XCTAssertFalse(greedy.tokenIds.isEmpty)
        try await serve(model) { server in
            var http = try self.caption(try await server.request("POST", "/v1/caption", headers: ["Content-Type": "image/png"], body: png))
            self.assertSame(http, defaults)
            XCTAssertEqual(http.beam, d.beamSize)
            XCTAssertEqual(http.maxLength, d.maxLength)
            self.assertSame(try self.caption(try await server.request("POST", "/v1/caption?beam=1", body: png)), greedy)
            http = try self.caption(try await server.request("POST", "/v1/caption?beam=3&max_length=5", body: png))
            self.assertSame(http, beam)
            XCTAssertEqual(http.beam, 3)
            XCTAssertEqual(http.maxLength, 5)
            XCTAssertLessThanOrEqual(http.tokenIds.count, 5)
        }
    }

    /// Concurrent requests share the Captioner under a limit of 2 and all get the direct answer.
    func testConcurrentRequests() async throws {
        let model = try TestModel.load()
        let images = (0..<6).map { Array(makePNG(width: 40 + 8 * $0, height: 48)) }
        let direct = try images.map { try model.captioner.makeSession().caption(imageData: Data($0), options: .init(beamSize: 1, maxLength: 8)) }
        try await serve(model, { $0.maxConcurrentCaptions = 2 }) { server in
            try await withThrowingTaskGroup(of: (Int, HTTPReply).self) { group in
                for (i, image) in images.enumerated() {
                    group.addTask { (i, try await server.request("POST", "/v1/caption?beam=1&max_length=8", body: image)) }
                }
                for try await (i, reply) in group { self.assertSame(try self.caption(reply), direct[i]) }
            }
        }
    }

    /// Concurrent captions on one worker are batched (a 50 ms window gathers them) and every
    /// answer equals captioning its image alone, greedy and beam.
    func testBatchedAnswersEqualOneAtATime() async throws {
        let model = try TestModel.load()
        let service = try CaptionService(captioner: model.captioner, configuration: ServerConfiguration(
            maxConcurrentCaptions: 1, maxBatchSize: 8, batchWindow: 0.05))
        let images = (0..<6).map { makePNG(width: 40 + 8 * $0, height: 48) }
        for options in [DecodingOptions(beamSize: 1, maxLength: 12), DecodingOptions(beamSize: 2, maxLength: 8)] {
            let direct = try images.map { try model.captioner.makeSession().caption(imageData: $0, options: options) }
            let sizes = try await withThrowingTaskGroup(of: (Int, CaptionResponse).self) { group in
                for (i, image) in images.enumerated() {
                    group.addTask { (i, try await service.caption(image, options: options)) }
                }
                var sizes: [Int] = []
                for try await (i, answer) in group {
                    self.assertSame(answer, direct[i])
                    sizes.append(answer.batchSize)
                }
                return sizes
            }
            XCTAssertGreaterThan(sizes.max()!, 1, "beam \(options.beamSize): no batch formed: \(sizes)")
        }
    }

    func testHealthAndModel() async throws {
        let model = try TestModel.load()
        let weights = try ModelDirectory(url: model.directory).openWeights()
        try await serve(model) { server in
            let healthReply = try await server.request("GET", "/v1/health")
            XCTAssertEqual(healthReply.status, 200, healthReply.text)
            let health = try self.decoder.decode(Health.self, from: healthReply.body)
            XCTAssertEqual(health.status, "ok")
            XCTAssertEqual(health.model, model.captioner.configuration.name)
            let modelReply = try await server.request("GET", "/v1/model")
            XCTAssertEqual(modelReply.status, 200, modelReply.text)
            let info = try self.decoder.decode(ModelResponse.self, from: modelReply.body)
            let c = model.captioner.configuration
            XCTAssertEqual(info.name, c.name)
            XCTAssertEqual(info.fusionLayers, c.fusion.numHiddenLayers)
            XCTAssertEqual(info.concepts, model.captioner.conceptNames.count)
            // Every F32 value in the file is a parameter: its size in bytes over 4.
            let bytes = weights.entries.values.reduce(0) { $0 + $1.range.count / $1.dtype.size }
            XCTAssertEqual(info.parameters, bytes)
            XCTAssertGreaterThan(info.parameters ?? 0, 1000)
        }
    }

    func testMalformedRequests() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 64, height: 64))
        try await serve(model, { $0.maxBodyBytes = 16384; $0.maxBeamSize = 8 }) { server in
            func post(_ uri: String, _ bytes: [UInt8]?, headers: [String: String] = [:]) async throws -> HTTPReply {
                try await server.request("POST", uri, headers: headers, body: bytes)
            }
            try self.expectError(try await post("/v1/caption", nil), 400, "empty body")
            try self.expectError(try await post("/v1/caption", []), 400, "empty body")
            try self.expectError(try await post("/v1/caption", Array("hello, this is not an image".utf8)), 415, "not a JPEG, PNG or WebP")
            try self.expectError(try await post("/v1/caption", (0..<200).map { UInt8($0 * 37 % 256) }), 415, "not a JPEG, PNG or WebP")
            try self.expectError(try await post("/v1/caption", Array(png.prefix(60))), 400, "bad image")
            try self.expectError(try await post("/v1/caption", Array(png.prefix(png.count / 2))), 400, "bad image")
            try self.expectError(try await post("/v1/caption", png, headers: ["Content-Type": "text/plain"]), 415, "not accepted")
            for bad in ["beam=0", "beam=-1", "beam=abc", "beam=9", "beam=", "beam=1.5"] {
                try self.expectError(try await post("/v1/caption?\(bad)", png), 400, "beam must be")
            }
            for bad in ["max_length=0", "max_length=x", "max_length=100000"] {
                try self.expectError(try await post("/v1/caption?\(bad)", png), 400, "max_length must be")
            }
            try self.expectError(try await post("/v1/caption?beams=2", png), 400, "unknown query parameter")
            try self.expectError(try await post("/v1/caption?beam=1&beam=2", png), 400, "twice")
            try self.expectError(try await post("/v1/caption", [UInt8](repeating: 7, count: 20000)), 413, "over the limit")
            let wrong = try await server.request("GET", "/v1/caption")
            try self.expectError(wrong, 405, "not allowed")
            XCTAssertEqual(wrong.headers["allow"], "POST")
            try self.expectError(try await post("/v1/health", [1]), 405, "not allowed")
            try self.expectError(try await server.request("DELETE", "/v1/model"), 405, "GET")
            try self.expectError(try await server.request("GET", "/nope"), 404, "no route")
            try self.expectError(try await post("/v1", nil), 404, "no route")
            try self.expectError(try await server.request("PUT", "/v1/caption", body: [UInt8](repeating: 1, count: 20000)),
                                 405, "not allowed")
            // The service still answers after all that.
            _ = try self.caption(try await post("/v1/caption", png))
        }
    }

    /// A multipart/form-data body of `fields` (name, bytes) with `boundary`.
    func form(_ fields: [(String, [UInt8])], boundary: String = "lightcap-boundary-7") -> [UInt8] {
        var body: [UInt8] = []
        for (name, bytes) in fields {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n".utf8)
            body += bytes + Array("\r\n".utf8)
        }
        return body + Array("--\(boundary)--\r\n".utf8)
    }

    /// The same image as raw bytes, as a form's `image` field and as JSON base64 gets the same
    /// caption; the JSON's beam and max_length apply; malformed forms and JSON get clear errors.
    func testFormAndJSONBodies() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 72, height: 56))
        let session = try model.captioner.makeSession()
        let d = model.captioner.configuration.decoding
        let direct = try session.caption(imageData: Data(png), options: .init(beamSize: d.beamSize, maxLength: d.maxLength))
        let beam2 = try session.caption(imageData: Data(png), options: .init(beamSize: 2, maxLength: 6))
        let multipart = ["Content-Type": "multipart/form-data; boundary=lightcap-boundary-7"]
        try await serve(model) { server in
            self.assertSame(try self.caption(try await server.request("POST", "/v1/caption", headers: multipart,
                                                                     body: self.form([("note", Array("hi".utf8)), ("image", png)]))), direct)
            let json = ["Content-Type": "application/json"]
            let encoded = Data(png).base64EncodedString()
            self.assertSame(try self.caption(try await server.request("POST", "/v1/caption", headers: json,
                                                                     body: Array("{\"image\": \"\(encoded)\"}".utf8))), direct)
            let http = try self.caption(try await server.request(
                "POST", "/v1/caption", headers: json, body: Array("{\"image\": \"\(encoded)\", \"beam\": 2, \"max_length\": 6}".utf8)))
            self.assertSame(http, beam2)
            XCTAssertEqual(http.beam, 2)
            try self.expectError(try await server.request("POST", "/v1/caption?beam=3", headers: json,
                                                          body: Array("{\"image\": \"\(encoded)\", \"beam\": 2}".utf8)), 400, "twice")
            for (bad, fragment) in [("[1, 2]", "not an object"), ("{\"beam\": 2}", "needs \"image\""),
                                    ("{\"image\": \"@@@\"}", "not valid base64"), ("{\"image\": 5}", "must be a string"),
                                    ("{\"image\": \"\(encoded)\", \"beam\": true}", "integers"),
                                    ("{\"image\": \"\(encoded)\", \"beams\": 2}", "unknown key 'beams'"), ("{", "not an object")] {
                try self.expectError(try await server.request("POST", "/v1/caption", headers: json, body: Array(bad.utf8)), 400, fragment)
            }
            try self.expectError(try await server.request("POST", "/v1/caption", headers: multipart, body: self.form([("file", png)])),
                                 400, "no `image` field")
            try self.expectError(try await server.request("POST", "/v1/caption", headers: multipart,
                                                          body: self.form([("image", png), ("image", png)])), 400, "/v1/captions")
            try self.expectError(try await server.request("POST", "/v1/caption", headers: ["Content-Type": "multipart/form-data"],
                                                          body: self.form([("image", png)])), 400, "boundary")
            try self.expectError(try await server.request("POST", "/v1/caption", headers: multipart, body: Array("garbage".utf8)),
                                 400, "malformed multipart")
            try self.expectError(try await server.request("POST", "/v1/caption", headers: multipart, body: self.form([("image", [])])),
                                 400, "`image` field is empty")
            try self.expectError(try await server.request("POST", "/v1/caption", headers: multipart,
                                                          body: self.form([("image", Array("not an image".utf8))])), 415, "not a JPEG")
        }
    }

    /// `POST /v1/captions`: several images in one form, answered in order, each failure in its place.
    func testBatchOfImages() async throws {
        let model = try TestModel.load()
        let images = (0..<3).map { Array(makePNG(width: 40 + 16 * $0, height: 40)) }
        let session = try model.captioner.makeSession()
        let direct = try images.map { try session.caption(imageData: Data($0), options: .init(beamSize: 1, maxLength: 8)) }
        let multipart = ["Content-Type": "multipart/form-data; boundary=lightcap-boundary-7"]
        try await serve(model, { $0.maxImagesPerRequest = 4 }) { server in
            let fields = [("image", images[0]), ("image", Array(images[1].prefix(40))), ("image", images[1]),
                          ("image", Array("text".utf8)), ("image", images[2])].prefix(4)
            let reply = try await server.request("POST", "/v1/captions?beam=1&max_length=8", headers: multipart, body: self.form(Array(fields)))
            XCTAssertEqual(reply.status, 200, reply.text)
            let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any]
            let items = try XCTUnwrap(object?["captions"] as? [[String: Any]])
            XCTAssertEqual(items.count, 4)
            XCTAssertEqual(items[0]["caption"] as? String, direct[0].text)
            XCTAssertEqual(items[1]["status"] as? Int, 400)
            XCTAssertTrue((items[1]["error"] as? String ?? "").contains("bad image"), "\(items[1])")
            XCTAssertEqual(items[2]["caption"] as? String, direct[1].text)
            XCTAssertEqual(items[3]["status"] as? Int, 415)
            let five = self.form((0..<5).map { _ in ("image", images[0]) })
            try self.expectError(try await server.request("POST", "/v1/captions", headers: multipart, body: five), 413, "at most 4")
            try self.expectError(try await server.request("POST", "/v1/captions", body: images[0]), 415, "multipart/form-data")
            // The input the request fuzz target found: an empty image field among others is an
            // error in its place, like any other bad image.
            let withEmpty = try await server.request("POST", "/v1/captions?beam=1&max_length=8", headers: multipart,
                                                     body: self.form([("image", images[0]), ("image", [])]))
            XCTAssertEqual(withEmpty.status, 200, withEmpty.text)
            let answers = try XCTUnwrap((try JSONSerialization.jsonObject(with: withEmpty.body) as? [String: Any])?["captions"] as? [[String: Any]])
            XCTAssertEqual(answers.first?["caption"] as? String, direct[0].text)
            XCTAssertEqual(answers.last?["status"] as? Int, 400, "\(answers)")
            XCTAssertTrue((answers.last?["error"] as? String ?? "").contains("image 2 of the form is empty"), "\(answers)")
        }
    }

    /// /healthz and /readyz, and the X-Request-ID of every answer: the client's when valid, else new.
    func testProbesAndRequestIDs() async throws {
        let model = try TestModel.load()
        try await serve(model) { server in
            let alive = try await server.request("GET", "/healthz")
            XCTAssertEqual(alive.status, 200, alive.text)
            XCTAssertEqual(try JSONDecoder().decode([String: String].self, from: alive.body), ["status": "alive"])
            let ready = try await server.request("GET", "/readyz", headers: ["X-Request-ID": "job-7.a:1"])
            XCTAssertEqual(ready.status, 200, ready.text)
            XCTAssertEqual(ready.headers["x-request-id"], "job-7.a:1")
            for bad in ["", "with space", String(repeating: "x", count: 129), "quote\"d"] {
                let reply = try await server.request("GET", "/healthz", headers: ["X-Request-ID": bad])
                let id = reply.headers["x-request-id"] ?? ""
                XCTAssertNotEqual(id, bad)
                XCTAssertNotNil(UUID(uuidString: id), "a new id for '\(bad)': '\(id)'")
            }
            let error = try await server.request("GET", "/nope")
            XCTAssertNotNil(UUID(uuidString: error.headers["x-request-id"] ?? ""), "errors carry an id too")
            try self.expectError(try await server.request("POST", "/readyz", body: [1]), 405, "not allowed")
        }
    }

    /// Draining (a graceful shutdown has begun): /readyz and new captions get 503, /healthz stays 200.
    func testDrainingRefusesNewWork() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 48, height: 48))
        var made: CaptionService?
        let server = try await LoopbackServer { port in
            made = try CaptionService(captioner: model.captioner, configuration: ServerConfiguration(port: port))
            return makeApplication(service: made!)
        }
        let service = made!
        _ = try self.caption(try await server.request("POST", "/v1/caption", body: png))
        service.startDraining()
        try self.expectError(try await server.request("GET", "/readyz"), 503, "draining")
        try self.expectError(try await server.request("POST", "/v1/caption", body: png), 503, "draining")
        let alive = try await server.request("GET", "/healthz")
        XCTAssertEqual(alive.status, 200)
        await server.stop()
    }

    /// Limits: a deadline (503, work stopped), a full queue (503 + Retry-After), a body that
    /// trickles (408), an image over the pixel limit (400, before decoding).
    func testLimits() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 64, height: 64))
        // The deadline races the work: a large image makes the work (decoding it) tens of
        // milliseconds, far longer than the deadline task's 1 us sleep plus its scheduling (a
        // 64x64 image, 5 ms of work, once won the race on a busy 2-core host).
        let large = Array(makePNG(width: 1500, height: 1500))
        try await serve(model, { $0.requestTimeout = 0.000_001 }) { server in
            try self.expectError(try await server.request("POST", "/v1/caption", body: large), 503, "timed out")
        }
        var made: CaptionService?
        let server = try await LoopbackServer { port in
            made = try CaptionService(captioner: model.captioner, configuration: ServerConfiguration(
                port: port, maxConcurrentCaptions: 1, maxQueuedRequests: 0, bodyTimeout: 0.5, maxPixels: 4000))
            return makeApplication(service: made!)
        }
        let service = made!
        service.batcher.hold()  // the one worker is taken, no room to wait
        let busy = try await server.request("POST", "/v1/caption", body: png)
        try expectError(busy, 503, "server busy")
        XCTAssertEqual(busy.headers["retry-after"], "1")
        service.batcher.release()
        let start = Date()
        let slow = try await server.request("POST", "/v1/caption", body: png, split: (bytes: 10, pause: 3, then: {}))
        try expectError(slow, 408, "did not arrive within 0.5 s")
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.5, "answered while the client still held the rest back")
        try expectError(try await server.request("POST", "/v1/caption", body: Array(makePNG(width: 100, height: 41))), 400, "exceeds the limit of 4000 pixels")
        _ = try caption(try await server.request("POST", "/v1/caption", body: Array(makePNG(width: 60, height: 60))))
        await server.stop()
    }

    /// A deadline stops the work itself: a session asked to stop throws `cancelled`.
    func testSessionStopsWhenAsked() throws {
        let model = try TestModel.load()
        let session = try model.captioner.makeSession()
        var asked = 0
        session.shouldStop = { asked += 1; return asked > 3 }
        XCTAssertThrowsError(try session.caption(imageData: makePNG(width: 64, height: 64), options: .init(beamSize: 2, maxLength: 10))) {
            guard case LightCapError.cancelled = $0 else { return XCTFail("\($0)") }
        }
    }

    /// --api-key: 401 without or with a wrong key (probes stay open); CORS for listed origins only.
    func testAPIKeyAndCORS() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 64, height: 64))
        try await serve(model, { $0.apiKey = "s3cret"; $0.corsOrigins = ["https://app.example"] }) { server in
            try self.expectError(try await server.request("POST", "/v1/caption", body: png), 401, "missing Authorization")
            let wrong = try await server.request("POST", "/v1/caption", headers: ["Authorization": "Bearer s3cre"], body: png)
            try self.expectError(wrong, 401, "wrong API key")
            XCTAssertEqual(wrong.headers["www-authenticate"], "Bearer")
            try self.expectError(try await server.request("GET", "/v1/model", headers: ["Authorization": "Bearer s3cretX"]), 401, "wrong")
            for probe in ["/healthz", "/readyz"] {
                let open = try await server.request("GET", probe)
                XCTAssertEqual(open.status, 200, probe)
            }
            let ok = try await server.request("POST", "/v1/caption",
                                              headers: ["Authorization": "Bearer s3cret", "Origin": "https://app.example"], body: png)
            _ = try self.caption(ok)
            XCTAssertEqual(ok.headers["access-control-allow-origin"], "https://app.example")
            let other = try await server.request("GET", "/v1/model", headers: ["Authorization": "Bearer s3cret", "Origin": "https://evil.example"])
            XCTAssertEqual(other.status, 200)
            XCTAssertNil(other.headers["access-control-allow-origin"])
            let preflight = try await server.request("OPTIONS", "/v1/caption", headers: [
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST"])
            XCTAssertEqual(preflight.status, 204, preflight.text)
            XCTAssertEqual(preflight.headers["access-control-allow-origin"], "https://app.example")
            XCTAssertTrue(preflight.headers["access-control-allow-headers"]?.contains("Authorization") ?? false)
        }
    }

    /// A graceful shutdown (SIGTERM's path) answers the request it accepted, then refuses connections.
    func testShutdownDrainsAcceptedRequests() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 64, height: 64))
        let server = try await LoopbackServer { port in
            try buildApplication(captioner: model.captioner, configuration: ServerConfiguration(port: port))
        }
        let d = model.captioner.configuration.decoding
        let direct = try model.captioner.makeSession().caption(imageData: Data(png), options: .init(beamSize: 1, maxLength: d.maxLength))
        // Half the body; once the server holds the request (0.3 s later: its head has been read
        // and the handler waits for the rest), the shutdown signal; then the rest: the answer still comes.
        let reply = try await server.request("POST", "/v1/caption?beam=1", body: png,
                                             split: (bytes: png.count / 2, pause: 0.3, then: {
                                                 usleep(300_000)
                                                 kill(getpid(), SIGUSR2)
                                             }))
        XCTAssertEqual(try caption(reply).caption, direct.text)
        await server.finished()
        XCTAssertThrowsError(try LoopbackServer.connect(port: server.port), "the port is closed after the drain")
    }

    /// GET /metrics: the Prometheus text format with requests by route and status, stage times,
    /// batch sizes and the gauges.
    func testMetrics() async throws {
        let model = try TestModel.load()
        let png = Array(makePNG(width: 64, height: 64))
        try await serve(model) { server in
            _ = try self.caption(try await server.request("POST", "/v1/caption", body: png))
            _ = try await server.request("POST", "/v1/caption", body: Array("nope".utf8))
            _ = try await server.request("GET", "/no/such/path")
            let form = ["Content-Type": "multipart/form-data; boundary=lightcap-boundary-7"]
            _ = try await server.request("POST", "/v1/captions", headers: form, body: self.form([("image", png), ("image", png)]))
            let reply = try await server.request("GET", "/metrics")
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual(reply.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
            let lines = Set(reply.text.split(separator: "\n").map(String.init))
            for expected in [
                #"lightcap_http_requests_total{route="/v1/caption",method="POST",status="200"} 1"#,
                #"lightcap_http_requests_total{route="/v1/caption",method="POST",status="415"} 1"#,
                #"lightcap_http_requests_total{route="other",method="GET",status="404"} 1"#,
                #"lightcap_http_requests_total{route="/v1/captions",method="POST",status="200"} 1"#,
                #"lightcap_caption_stage_duration_seconds_count{stage="backbone"} 3"#,
                #"lightcap_caption_stage_duration_seconds_count{stage="queue"} 3"#,
                #"lightcap_request_images_count 1"#, #"lightcap_request_images_sum 2.0"#,
                #"lightcap_batch_images_sum 4.0"#,
                "lightcap_captions_in_flight 0.0", "lightcap_queue_depth_requests 0.0",
            ] {
                XCTAssertTrue(lines.contains(expected), "missing: \(expected)\n\(reply.text)")
            }
            XCTAssertTrue(lines.contains { $0.hasPrefix(#"lightcap_http_request_duration_seconds_bucket{route="/v1/caption",le="10.0"}"#) })
        }
    }

    /// A body sent in chunks without a Content-Length is limited as it arrives.
    func testChunkedBodyOverTheLimit() async throws {
        let model = try TestModel.load()
        try await serve(model, { $0.maxBodyBytes = 1 << 16 }) { server in
            let chunk = [UInt8](repeating: 1, count: 1 << 15)
            var body: [UInt8] = []
            for _ in 0..<3 { body += Array("8000\r\n".utf8) + chunk + Array("\r\n".utf8) }
            body += Array("0\r\n\r\n".utf8)
            let reply = try await server.request("POST", "/v1/caption", headers: ["Transfer-Encoding": "chunked"], body: body)
            try self.expectError(reply, 413, "over the limit")
        }
    }
}

/// The batcher's queue: bounded, batches of equal options up to the maximum, cancelled
/// requests dropped with an answer.
final class CaptionBatcherTests: XCTestCase {
    /// What a job's `done` reported.
    final class Outcomes: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [(index: Int, result: Result<Caption, any Error>, batchSize: Int)] = []
        private let all = DispatchSemaphore(value: 0)

        func record(_ index: Int, _ result: Result<Caption, any Error>, _ batchSize: Int) {
            lock.lock()
            items.append((index, result, batchSize))
            lock.unlock()
            all.signal()
        }

        /// Waits for `count` outcomes (at most 30 s), sorted by job index.
        func wait(_ count: Int) -> [(index: Int, result: Result<Caption, any Error>, batchSize: Int)] {
            for _ in 0..<count { _ = all.wait(timeout: .now() + 30) }
            lock.lock()
            defer { lock.unlock() }
            return items.sorted { $0.index < $1.index }
        }
    }

    func makeBatcher(_ model: TestModel.Loaded, maxBatch: Int, maxWaiting: Int) throws -> CaptionBatcher {
        try CaptionBatcher(captioner: model.captioner, workers: 1, maxBatch: maxBatch, window: 0, maxWaiting: maxWaiting,
                           imageLimits: ImageLimits(), metrics: ServiceMetrics())
    }

    func testBatchesOfEqualOptionsUpToTheMaximum() throws {
        let model = try TestModel.load()
        let batcher = try makeBatcher(model, maxBatch: 3, maxWaiting: 10)
        defer { batcher.stop() }
        let outcomes = Outcomes()
        let greedy = DecodingOptions(beamSize: 1, maxLength: 8), beam = DecodingOptions(beamSize: 2, maxLength: 8)
        let jobs = (0..<6).map { (makePNG(width: 40 + 4 * $0, height: 40), $0 == 2 ? beam : greedy) }
        batcher.hold()  // all six wait, then one worker takes them
        for (i, (image, options)) in jobs.enumerated() {
            XCTAssertTrue(batcher.submit(.init(data: image, options: options, cancel: CancelFlag()) { outcomes.record(i, $0, $2) }))
        }
        XCTAssertEqual(batcher.load.waiting, 6)
        batcher.release()
        let results = outcomes.wait(6)
        XCTAssertEqual(results.map(\.index), Array(0..<6))
        // Greedy 0, 1, 3 first (the oldest and two later ones of its options), then beam 2 alone,
        // then greedy 4, 5.
        XCTAssertEqual(results.map(\.batchSize), [3, 3, 1, 3, 2, 2])
        for (i, outcome) in results.enumerated() {
            let alone = try model.captioner.makeSession().caption(imageData: jobs[i].0, options: jobs[i].1)
            XCTAssertEqual(try outcome.result.get().tokenIds, alone.tokenIds, "job \(i)")
        }
        XCTAssertEqual(batcher.load.active, 0)
        XCTAssertEqual(batcher.load.waiting, 0)
    }

    func testRefusesPastTheQueueAndDropsCancelled() throws {
        let model = try TestModel.load()
        let batcher = try makeBatcher(model, maxBatch: 4, maxWaiting: 2)
        defer { batcher.stop() }
        let outcomes = Outcomes()
        let image = makePNG(width: 48, height: 48)
        batcher.hold()
        let cancelled = CancelFlag()
        XCTAssertTrue(batcher.submit(.init(data: image, options: .init(), cancel: cancelled) { outcomes.record(0, $0, $2) }))
        XCTAssertTrue(batcher.submit(.init(data: image, options: .init(), cancel: CancelFlag()) { outcomes.record(1, $0, $2) }))
        XCTAssertFalse(batcher.submit(.init(data: image, options: .init(), cancel: CancelFlag()) { outcomes.record(2, $0, $2) }),
                       "a third request past a queue of 2 with no free worker")
        cancelled.set()
        batcher.release()
        let results = outcomes.wait(2)
        XCTAssertEqual(results.map(\.index), [0, 1])
        guard case .failure(LightCapError.cancelled) = results[0].result else { return XCTFail("\(results[0].result)") }
        XCTAssertNoThrow(try results[1].result.get())
        XCTAssertEqual(results[1].batchSize, 1)
    }
}

extension JSONDecoder {
    static var snake: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
