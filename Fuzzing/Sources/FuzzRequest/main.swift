// Fuzzes the caption handler's request parsing, in the order `POST /v1/caption` and
// `POST /v1/captions` run it: the query (Hummingbird's URI parser, then CaptionService.options),
// the headers' content type and length, the body read as raw bytes, multipart/form-data or JSON,
// then the options again with the JSON body's parameters. The input is cut into the request target
// (path and query), the header lines ("Name: value") and the body, with Fuzz.separator between them.
import Foundation
import FuzzSupport
import HTTPTypes
import Hummingbird
import LightCap
@testable import LightCapServer

let configuration = ServerConfiguration(maxBodyBytes: 64 << 10, maxConcurrentCaptions: 1, maxImagesPerRequest: 4,
                                        bodyTimeout: 5)
let service: CaptionService = {
    do {
        return try CaptionService(captioner: try Captioner(modelDirectory: Fuzz.defaultModel), configuration: configuration)
    } catch {
        fatalError("cannot load the default model: \(error)")
    }
}()

/// Runs `work` to completion on the cooperative pool and returns its result (libFuzzer calls us synchronously).
func blocking<T>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, any Error>?
    Task {
        do { result = .success(try await work()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try result!.get()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let parts = Fuzz.split(Fuzz.data(start, count), limit: 3)
    let target = String(decoding: parts[0], as: UTF8.self)
    var fields = HTTPFields()
    if parts.count > 1 {
        for line in String(decoding: parts[1], as: UTF8.self).split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"), let name = HTTPField.Name(String(line[..<colon])) else { continue }
            fields.append(HTTPField(name: name, value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
    }
    let body = parts.count > 2 ? parts[2] : Data()
    let multiple = target.hasPrefix("/v1/captions")
    let request = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "localhost", path: target,
                                            headerFields: fields),
                          body: .init(buffer: ByteBuffer(bytes: body)))
    do {
        let query = request.uri.queryParameters.map { (key: String($0.key), value: String($0.value)) }
        _ = try service.options(query: query)
        let read = try blocking {
            try await LightCapServer.RequestBody.read(request, limit: configuration.maxBodyBytes, timeout: configuration.bodyTimeout,
                                                      multiple: multiple, maxImages: configuration.maxImagesPerRequest)
        }
        precondition(!read.images.isEmpty && read.images.allSatisfy { !$0.isEmpty }, "a body was accepted without an image")
        precondition(read.images.count <= (multiple ? configuration.maxImagesPerRequest : 1), "too many images accepted")
        _ = try service.options(query: query + read.parameters)
    } catch {
        Fuzz.expectTyped(error, [APIError.self], "request")
    }
    return 0
}
