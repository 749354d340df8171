// Fuzzes the caption handler's request parsing, in the order `POST /v1/caption` and
// `POST /v1/captions` run it: the query (Hummingbird's URI parser, then CaptionService.options),
// the headers' content type and length (RequestBody.accept), the body as raw bytes,
// multipart/form-data or JSON (RequestBody.parse), then the options again with the JSON body's
// parameters. Only the network read between the two (RequestBody.collect, NIO's) is left out: it
// would need a task per input. The input is cut into the request target (path and query), the
// header lines ("Name: value") and the body, with Fuzz.separator between them.
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
        let (media, parameters) = try LightCapServer.RequestBody.accept(request.headers, limit: configuration.maxBodyBytes,
                                                                        multiple: multiple)
        guard body.count <= configuration.maxBodyBytes else { return 0 }  // collect's 413
        let read = try LightCapServer.RequestBody.parse(ByteBuffer(bytes: body), media: media, parameters: parameters,
                                                        multiple: multiple, maxImages: configuration.maxImagesPerRequest)
        // An empty image is accepted only among several (POST /v1/captions answers it in its place).
        precondition(!read.images.isEmpty && (multiple || !read.images[0].isEmpty), "a body was accepted without an image")
        precondition(read.images.count <= (multiple ? configuration.maxImagesPerRequest : 1), "too many images accepted")
        _ = try service.options(query: query + read.parameters)
    } catch {
        Fuzz.expectTyped(error, [APIError.self], "request")
    }
    return 0
}
