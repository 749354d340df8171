// The HTTP service (docs/SERVER.md): routes, request parsing and JSON errors.
//   POST /v1/caption?beam=N&max_length=N   body: the image bytes (JPEG, PNG, WebP), a form's
//                                          `image` field, or JSON {"image": base64, "beam", "max_length"}
//   POST /v1/captions?beam=N&max_length=N  a form with one `image` field per image
//   GET  /v1/health, /v1/model             the service and the model
//   GET  /healthz, /readyz                 alive; ready (503 while draining)
//   GET  /metrics                          Prometheus text format (ServiceMetrics)
//   GET  /                                 a page to try it in a browser (WebPage)
// Every error is `{"error": "..."}` with its status: 400 bad image or parameters, 413 body over
// the limit, 415 not an image, 404 unknown path, 405 known path with another method, 503 busy
// or draining. Every answer carries an `X-Request-ID` (the client's, or a new one), which the
// request's log lines carry too.

import Foundation
import HTTPTypes
import Hummingbird
import LightCap
import LightCapCore
import LightCapImage
import ServiceLifecycle

/// Builds the LightCap HTTP application around one shared, read-only `captioner`.
/// Run it with `runService()`.
/// Throws when `configuration.modelDirectory` is set but its weights cannot be read.
public func buildApplication(captioner: Captioner,
                             configuration: ServerConfiguration = ServerConfiguration()) throws -> some ApplicationProtocol {
    let service = try CaptionService(captioner: captioner, configuration: configuration)
    return makeApplication(service: service)
}

/// The application around a ready `service`.
func makeApplication(service: CaptionService) -> some ApplicationProtocol {
    let configuration = service.configuration
    return Application(
        router: buildRouter(service: service),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "lightcap"),
        services: [DrainWatch(service: service)])
}

/// Marks the service as draining once a graceful shutdown (SIGTERM, SIGINT) begins: /readyz
/// answers 503 and new captions are refused while the accepted ones finish.
struct DrainWatch: Service {
    let service: CaptionService

    func run() async throws {
        try? await gracefulShutdown()
        service.startDraining()
    }
}

/// The routes of the service.
func buildRouter(service: CaptionService) -> Router<BasicRequestContext> {
    let router = Router()
    let configuration = service.configuration
    router.add(middleware: RequestIDMiddleware(metrics: service.metrics))
    if !configuration.corsOrigins.isEmpty { router.add(middleware: CORSAllowList(origins: Set(configuration.corsOrigins))) }
    router.add(middleware: JSONErrorMiddleware(routes: [
        "/v1/caption": [.post], "/v1/captions": [.post], "/v1/health": [.get], "/v1/model": [.get], "/healthz": [.get], "/readyz": [.get], "/metrics": [.get], "/": [.get],
    ]))
    if let key = configuration.apiKey { router.add(middleware: APIKeyMiddleware(key: key)) }
    router.get("/") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: WebPage.html)))
    }
    router.get("/healthz") { _, _ in
        jsonResponse(["status": "alive"])
    }
    router.get("/readyz") { _, _ in
        guard !service.isDraining else { throw APIError(status: .serviceUnavailable, message: "draining: shutting down") }
        return jsonResponse(["status": "ready"])
    }
    router.post("/v1/caption") { request, _ in
        try await caption(request, service: service)
    }
    router.post("/v1/captions") { request, _ in
        try await captions(request, service: service)
    }
    router.get("/v1/health") { _, _ in
        let load = service.batcher.load
        return jsonResponse(Health(status: "ok", model: service.model.name, active: load.active, waiting: load.waiting,
                                   maxConcurrent: service.batcher.workers, maxBatch: service.batcher.maxBatch))
    }
    router.get("/v1/model") { _, _ in
        jsonResponse(service.model)
    }
    router.get("/metrics") { _, _ in
        let load = service.batcher.load
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: service.metrics.exposition(active: load.active, waiting: load.waiting))))
    }
    return router
}

/// `GET /v1/health`.
struct Health: Codable {
    var status: String
    var model: String
    var active: Int
    var waiting: Int
    /// Worker threads, and the most images one of them decodes together.
    var maxConcurrent: Int
    var maxBatch: Int
}

/// `POST /v1/caption`: checks the query, the content type and the size, reads the body (raw
/// bytes, a form's `image` field or JSON), captions it.
func caption(_ request: Request, service: CaptionService) async throws -> Response {
    let query = request.uri.queryParameters.map { (key: String($0.key), value: String($0.value)) }
    _ = try service.options(query: query)  // a bad query is answered before the body is read
    let body = try await RequestBody.read(request, limit: service.configuration.maxBodyBytes,
                                          timeout: service.configuration.bodyTimeout)
    let options = try service.options(query: query + body.parameters)
    return jsonResponse(try await service.caption(body.images[0], options: options))
}

/// `POST /v1/captions`: a multipart form with one `image` field per image; the answer lists a
/// caption or an error (with its status) per image, in order. The images are queued together,
/// so the batcher decodes them in one batch where its limits allow.
func captions(_ request: Request, service: CaptionService) async throws -> Response {
    let options = try service.options(query: request.uri.queryParameters.map { (String($0.key), String($0.value)) })
    let body = try await RequestBody.read(request, limit: service.configuration.maxBodyBytes,
                                          timeout: service.configuration.bodyTimeout, multiple: true,
                                          maxImages: service.configuration.maxImagesPerRequest)
    service.metrics.request(images: body.images.count)
    let items = await withTaskGroup(of: (Int, BatchItem).self) { group in
        for (i, image) in body.images.enumerated() {
            group.addTask {
                guard !image.isEmpty else {
                    return (i, .failure(BatchError(error: "image \(i + 1) of the form is empty", status: 400)))
                }
                do { return (i, .caption(try await service.caption(image, options: options))) } catch {
                    let (status, message, _) = errorAnswer(error)
                    return (i, .failure(BatchError(error: message, status: Int(status.code))))
                }
            }
        }
        var items = [BatchItem?](repeating: nil, count: body.images.count)
        for await (i, item) in group { items[i] = item }
        return items.map { $0! }
    }
    return jsonResponse(BatchResponse(captions: items))
}

/// One image's answer in `POST /v1/captions`.
enum BatchItem: Encodable {
    case caption(CaptionResponse)
    case failure(BatchError)

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .caption(let c): try c.encode(to: encoder)
        case .failure(let e): try e.encode(to: encoder)
        }
    }
}

/// `{"error": "...", "status": N}` in place of a caption.
struct BatchError: Codable {
    var error: String
    var status: Int
}

/// `{"captions": [...]}`.
struct BatchResponse: Encodable {
    var captions: [BatchItem]
}

/// The status, message and headers an error is answered with (routes' own errors aside).
func errorAnswer(_ error: any Error) -> (HTTPResponse.Status, String, HTTPFields) {
    switch error {
    case let error as APIError: return (error.status, error.message, error.headers)
    case let error as ImageError:
        if case .unrecognizedFormat = error { return (.unsupportedMediaType, error.description, [:]) }
        return (.badRequest, "bad image: \(error.description)", [:])
    case let error as LightCapError:
        if case .invalidArgument = error { return (.badRequest, error.description, [:]) }
        if case .cancelled = error { return (.serviceUnavailable, error.description, [:]) }
        return (.internalServerError, error.description, [:])
    default: return (.internalServerError, "\(error)", [:])
    }
}

private let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf",
                                                                   nan: "nan")
    return encoder
}()

/// A JSON response (snake_case keys, sorted).
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
    let data: Data
    var status = status
    do {
        data = try encoder.encode(value)
    } catch {
        status = .internalServerError
        data = Data(#"{"error":"cannot encode the response"}"#.utf8)
    }
    var fields = headers
    fields[.contentType] = "application/json; charset=utf-8"
    return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// Turns every error into `{"error": "..."}` with its status; a known path asked with another
/// method gets 405 and an Allow header instead of the router's 404.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            var path = request.uri.path
            while path.count > 1, path.hasSuffix("/") { path.removeLast() }
            if error.status == .notFound, let allowed = routes[path], !allowed.contains(request.method) {
                var headers = HTTPFields()
                headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
                return Self.error(.methodNotAllowed,
                                  "method \(request.method.rawValue) is not allowed on \(path) (allowed: \(headers[.allow]!))",
                                  headers: headers)
            }
            if error.status == .notFound {
                return Self.error(.notFound, "no route \(request.method.rawValue) \(path) (see GET /v1/health, GET /v1/model, POST /v1/caption)")
            }
            let message = (error as? HTTPError)?.body ?? error.status.reasonPhrase
            return Self.error(error.status, message)
        } catch {
            let (status, message, headers) = errorAnswer(error)
            return Self.error(status, message, headers: headers)
        }
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        jsonResponse(ErrorBody(error: message), status: status, headers: headers)
    }
}

/// Gives every request an id: the client's `X-Request-ID` when it is 1 to 128 characters of
/// letters, digits and `-_.:`, else a new UUID. The id goes back in the answer's header and into
/// the request's logger (`request_id`), and one line per request is logged: method, path,
/// status, milliseconds.
struct RequestIDMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServiceMetrics

    static func valid(_ id: String) -> Bool {
        (1...128).contains(id.utf8.count)
            && id.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.:".unicodeScalars.contains($0)) }
    }

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let given = request.headers[.xRequestID]
        let id = given.flatMap { Self.valid($0) ? $0 : nil } ?? UUID().uuidString
        var context = context
        context.logger[metadataKey: "request_id"] = .string(id)
        let start = ContinuousClock.now
        var response = try await next(request, context)
        response.headers[.xRequestID] = id
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15
        context.logger.info("\(request.method.rawValue) \(request.uri.path) \(response.status.code) \(String(format: "%.1f", ms)) ms")
        metrics.request(method: request.method.rawValue, path: request.uri.path, status: Int(response.status.code), seconds: ms / 1000)
        return response
    }
}

extension HTTPField.Name {
    static let xRequestID = Self("X-Request-ID")!
}

/// `{"error": "..."}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var error: String
}
