// The HTTP service in-process (HummingbirdTesting's router framework, no socket), plus one live
// run on loopback. The model: models/default when committed, else the tiny fixture model
// ($LIGHTCAP_FIXTURES/tiny/model; a failure when LIGHTCAP_FIXTURES is set and it is missing).

import Foundation
import Hummingbird
import HummingbirdTesting
import LightCap
import LightCapCore
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
    let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }()

    func app(_ model: TestModel.Loaded, _ configure: (inout ServerConfiguration) -> Void = { _ in }) throws
        -> some ApplicationProtocol {
        var configuration = ServerConfiguration(port: 0, modelDirectory: model.directory)
        configure(&configuration)
        return try buildApplication(captioner: model.captioner, configuration: configuration)
    }

    func body(_ response: TestResponse) -> String { String(decoding: response.body.readableBytesView, as: UTF8.self) }

    /// Asserts a JSON error with `status` whose message contains `fragment`.
    func expectError(_ response: TestResponse, _ status: HTTPResponse.Status, _ fragment: String,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(response.status, status, body(response), file: file, line: line)
        XCTAssertEqual(response.headers[.contentType], "application/json; charset=utf-8", file: file, line: line)
        let error = try decoder.decode(ErrorBody.self, from: Data(response.body.readableBytesView))
        XCTAssertTrue(error.error.contains(fragment), "'\(error.error)' lacks '\(fragment)'", file: file, line: line)
    }

    func assertSame(_ http: CaptionResponse, _ direct: Caption, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(http.caption, direct.text, file: file, line: line)
        XCTAssertEqual(http.tokens, direct.tokens, file: file, line: line)
        XCTAssertEqual(http.tokenIds, direct.tokenIds, file: file, line: line)
        XCTAssertEqual(http.score, direct.score, file: file, line: line)
        XCTAssertEqual(http.concepts.map(\.name), direct.concepts.map(\.name), file: file, line: line)
        XCTAssertEqual(http.concepts.map(\.score), direct.concepts.map(\.score), file: file, line: line)
        XCTAssertEqual(Set(http.timings.keys), Set(direct.timings.keys).union(["queue", "total"]), file: file, line: line)
    }

    func testCaptionMatchesDirectCall() async throws {
        let model = try TestModel.load()
        let png = makePNG(width: 96, height: 64)
        let d = model.captioner.configuration.decoding
        // The defaults are the model's (config.json decoding), as in `lightcap caption`.
        let defaults = try model.captioner.makeSession().caption(imageData: png, options: .init(beamSize: d.beamSize, maxLength: d.maxLength))
        let greedy = try model.captioner.makeSession().caption(imageData: png, options: .init(beamSize: 1, maxLength: d.maxLength))
        let beam = try model.captioner.makeSession().caption(imageData: png, options: .init(beamSize: 3, maxLength: 5))
        XCTAssertFalse(greedy.tokenIds.isEmpty)
        try await app(model).test(.router) { client in
            try await client.execute(uri: "/v1/caption", method: .post, headers: [.contentType: "image/png"],
                                     body: ByteBuffer(bytes: png)) { response in
                XCTAssertEqual(response.status, .ok, self.body(response))
                let http = try self.decoder.decode(CaptionResponse.self, from: Data(response.body.readableBytesView))
                self.assertSame(http, defaults)
                XCTAssertEqual(http.beam, d.beamSize)
                XCTAssertEqual(http.maxLength, d.maxLength)
            }
            try await client.execute(uri: "/v1/caption?beam=1", method: .post, body: ByteBuffer(bytes: png)) { response in
                XCTAssertEqual(response.status, .ok, self.body(response))
                self.assertSame(try self.decoder.decode(CaptionResponse.self, from: Data(response.body.readableBytesView)), greedy)
            }
            try await client.execute(uri: "/v1/caption?beam=3&max_length=5", method: .post,
                                     body: ByteBuffer(bytes: png)) { response in
                XCTAssertEqual(response.status, .ok, self.body(response))
                let http = try self.decoder.decode(CaptionResponse.self, from: Data(response.body.readableBytesView))
                self.assertSame(http, beam)
                XCTAssertEqual(http.beam, 3)
                XCTAssertEqual(http.maxLength, 5)
                XCTAssertLessThanOrEqual(http.tokenIds.count, 5)
            }
        }
    }

    /// Concurrent requests share the Captioner under a limit of 2 and all get the direct answer.
    func testConcurrentRequests() async throws {
        let model = try TestModel.load()
        let images = (0..<6).map { makePNG(width: 40 + 8 * $0, height: 48) }
        let direct = try images.map { try model.captioner.makeSession().caption(imageData: $0, options: .init(beamSize: 1, maxLength: 8)) }
        try await app(model, { $0.maxConcurrentCaptions = 2 }).test(.router) { client in
            try await withThrowingTaskGroup(of: (Int, CaptionResponse).self) { group in
                for (i, image) in images.enumerated() {
                    group.addTask {
                        try await client.execute(uri: "/v1/caption?beam=1&max_length=8", method: .post,
                                                 body: ByteBuffer(bytes: image)) {
                            XCTAssertEqual($0.status, .ok)
                            return (i, try JSONDecoder.snake.decode(CaptionResponse.self, from: Data($0.body.readableBytesView)))
                        }
                    }
                }
                for try await (i, http) in group { self.assertSame(http, direct[i]) }
            }
        }
    }

    /// The service reuses its caption sessions: six concurrent captions under a limit of 2 make
    /// at most 2 sessions, and every answer equals a fresh session's.
    func testSessionsArePooled() async throws {
        let model = try TestModel.load()
        let service = try CaptionService(captioner: model.captioner, configuration: ServerConfiguration(maxConcurrentCaptions: 2))
        let images = (0..<6).map { makePNG(width: 40 + 8 * $0, height: 48) }
        let options = DecodingOptions(beamSize: 2, maxLength: 8)
        let direct = try images.map { try model.captioner.makeSession().caption(imageData: $0, options: options) }
        try await withThrowingTaskGroup(of: (Int, CaptionResponse).self) { group in
            for (i, image) in images.enumerated() {
                group.addTask { (i, try await service.caption(image, options: options)) }
            }
            for try await (i, answer) in group { self.assertSame(answer, direct[i]) }
        }
        XCTAssertGreaterThanOrEqual(service.sessions.made, 1)
        XCTAssertLessThanOrEqual(service.sessions.made, 2, "sessions made for 6 captions under a limit of 2")
    }

    func testHealthAndModel() async throws {
        let model = try TestModel.load()
        let weights = try ModelDirectory(url: model.directory).openWeights()
        try await app(model).test(.router) { client in
            try await client.execute(uri: "/v1/health", method: .get) { response in
                XCTAssertEqual(response.status, .ok)
                let health = try self.decoder.decode(Health.self, from: Data(response.body.readableBytesView))
                XCTAssertEqual(health.status, "ok")
                XCTAssertEqual(health.model, model.captioner.configuration.name)
            }
            try await client.execute(uri: "/v1/model", method: .get) { response in
                XCTAssertEqual(response.status, .ok)
                let info = try self.decoder.decode(ModelResponse.self, from: Data(response.body.readableBytesView))
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
    }

    func testMalformedRequests() async throws {
        let model = try TestModel.load()
        let png = makePNG(width: 64, height: 64)
        try await app(model, { $0.maxBodyBytes = 16384; $0.maxBeamSize = 8 }).test(.router) { client in
            func post(_ uri: String, _ bytes: [UInt8]?, headers: HTTPFields = [:]) async throws -> TestResponse {
                try await client.execute(uri: uri, method: .post, headers: headers, body: bytes.map { ByteBuffer(bytes: $0) })
            }
            try self.expectError(try await post("/v1/caption", nil), .badRequest, "empty body")
            try self.expectError(try await post("/v1/caption", []), .badRequest, "empty body")
            try self.expectError(try await post("/v1/caption", Array("hello, this is not an image".utf8)),
                                 .unsupportedMediaType, "not a JPEG, PNG or WebP")
            try self.expectError(try await post("/v1/caption", (0..<200).map { UInt8($0 * 37 % 256) }),
                                 .unsupportedMediaType, "not a JPEG, PNG or WebP")
            try self.expectError(try await post("/v1/caption", Array(png.prefix(60))), .badRequest, "bad image")
            try self.expectError(try await post("/v1/caption", Array(png.prefix(png.count / 2))), .badRequest, "bad image")
            try self.expectError(try await post("/v1/caption", Array(png), headers: [.contentType: "text/plain"]),
                                 .unsupportedMediaType, "not an image")
            for bad in ["beam=0", "beam=-1", "beam=abc", "beam=9", "beam=", "beam=1.5"] {
                try self.expectError(try await post("/v1/caption?\(bad)", Array(png)), .badRequest, "beam must be")
            }
            for bad in ["max_length=0", "max_length=x", "max_length=100000"] {
                try self.expectError(try await post("/v1/caption?\(bad)", Array(png)), .badRequest, "max_length must be")
            }
            try self.expectError(try await post("/v1/caption?beams=2", Array(png)), .badRequest, "unknown query parameter")
            try self.expectError(try await post("/v1/caption?beam=1&beam=2", Array(png)), .badRequest, "twice")
            let big = [UInt8](repeating: 7, count: 20000)
            try self.expectError(try await post("/v1/caption", big), .contentTooLarge, "over the limit")
            let wrong = try await client.execute(uri: "/v1/caption", method: .get)
            try self.expectError(wrong, .methodNotAllowed, "not allowed")
            XCTAssertEqual(wrong.headers[.allow], "POST")
            try self.expectError(try await post("/v1/health", [1]), .methodNotAllowed, "not allowed")
            try self.expectError(try await client.execute(uri: "/v1/model", method: .delete), .methodNotAllowed, "GET")
            try self.expectError(try await client.execute(uri: "/nope", method: .get), .notFound, "no route")
            try self.expectError(try await client.execute(uri: "/v1", method: .post), .notFound, "no route")
            // The service still answers after all that.
            let ok = try await post("/v1/caption", Array(png))
            XCTAssertEqual(ok.status, .ok, self.body(ok))
        }
    }

    /// A real socket on loopback (port 0): streamed body, Content-Length limit, a caption.
    func testLiveOnLoopback() async throws {
        let model = try TestModel.load()
        let png = makePNG(width: 64, height: 48)
        let direct = try model.captioner.makeSession().caption(imageData: png, options: .init(beamSize: 2, maxLength: 6))
        try await app(model, { $0.maxBodyBytes = 1 << 16 }).test(.live) { client in
            try await client.execute(uri: "/v1/caption?max_length=6&beam=2", method: .post, body: ByteBuffer(bytes: png)) { response in
                XCTAssertEqual(response.status, .ok, self.body(response))
                self.assertSame(try self.decoder.decode(CaptionResponse.self, from: Data(response.body.readableBytesView)), direct)
            }
            let big = ByteBuffer(bytes: [UInt8](repeating: 1, count: (1 << 16) + 1))
            try self.expectError(try await client.execute(uri: "/v1/caption", method: .post, body: big),
                                 .contentTooLarge, "over the limit")
            try self.expectError(try await client.execute(uri: "/v1/caption", method: .put, body: big),
                                 .methodNotAllowed, "not allowed")
        }
    }
}

/// The async limiter never lets more than `limit` run and refuses past `maxWaiting`.
final class AsyncLimiterTests: XCTestCase {
    actor Gauge {
        var now = 0, peak = 0
        func enter() { now += 1; peak = max(peak, now) }
        func leave() { now -= 1 }
    }

    func testBoundsConcurrency() async throws {
        let limiter = AsyncLimiter(limit: 3, maxWaiting: 100)
        let gauge = Gauge()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    guard await limiter.acquire() else { return XCTFail("refused") }
                    await gauge.enter()
                    try? await Task.sleep(nanoseconds: 2_000_000)
                    await gauge.leave()
                    await limiter.release()
                }
            }
        }
        let peak = await gauge.peak
        XCTAssertEqual(peak, 3)
        let load = await limiter.load
        XCTAssertEqual(load.active, 0)
        XCTAssertEqual(load.waiting, 0)
    }

    func testRefusesPastQueue() async throws {
        let limiter = AsyncLimiter(limit: 1, maxWaiting: 1)
        let first = await limiter.acquire()
        XCTAssertTrue(first)
        let waiter = Task { await limiter.acquire() }
        while await limiter.load.waiting == 0 { await Task.yield() }
        let third = await limiter.acquire()
        XCTAssertFalse(third)
        await limiter.release()
        let second = await waiter.value
        XCTAssertTrue(second)
        await limiter.release()
        let load = await limiter.load
        XCTAssertEqual(load.active, 0)
    }
}

extension JSONDecoder {
    static var snake: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
