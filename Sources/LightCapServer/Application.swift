// The HTTP service (docs/SERVER.md): routes, request parsing and JSON errors.
//   POST /v1/caption?beam=N&max_length=N   body: the raw image bytes (JPEG, PNG, WebP)
//   GET  /v1/health
//   GET  /v1/model
// Every error is `{"error": "..."}` with its status: 400 bad image or parameters, 413 body over
// the limit, 415 not an image, 404 unknown path, 405 known path with another method, 503 busy.

import Foundation
import Hummingbird
import LightCap
import LightCapCore
import LightCapImage

/// Builds the LightCap HTTP application around one shared, read-only `captioner`.
/// Run it with `runService()`.
/// Throws when `configuration.modelDirectory` is set but its weights cannot be read.
public func buildApplication(captioner: Captioner,
                             configuration: ServerConfiguration = ServerConfiguration()) throws -> some ApplicationProtocol {
    let router = try buildRouter(captioner: captioner, configuration: configuration)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "lightcap"))
}

/// The routes of the service (exposed for tests that need no server).
func buildRouter(captioner: Captioner, configuration: ServerConfiguration) throws -> Router<BasicRequestContext> {
    let service = try CaptionService(captioner: captioner, configuration: configuration)
    let router = Router()
    router.add(middleware: JSONErrorMiddleware(routes: [
        "/v1/caption": [.post], "/v1/health": [.get], "/v1/model": [.get],
    ]))
    router.post("/v1/caption") { request, _ in
        try await caption(request, service: service)
    }
    router.get("/v1/health") { _, _ in
        let load = await service.limiter.load
        return jsonResponse(Health(status: "ok", model: service.model.name, active: load.active, waiting: load.waiting,
                                   maxConcurrent: service.limiter.limit))
    }
    router.get("/v1/model") { _, _ in
        jsonResponse(service.model)
    }
    return router
}

/// `GET /v1/health`.
struct Health: Codable {
    var status: String
    var model: String
    var active: Int
    var waiting: Int
    var maxConcurrent: Int
}

/// `POST /v1/caption`: checks the query, the content type and the size, reads the body, captions it.
func caption(_ request: Request, service: CaptionService) async throws -> Response {
    let options = try service.options(query: request.uri.queryParameters.map { (String($0.key), String($0.value)) })
    if let type = request.headers[.contentType] {
        let media = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        guard media.hasPrefix("image/") || media == "application/octet-stream" else {
            throw APIError(status: .unsupportedMediaType,
                           message: "content type '\(type)' is not an image (send JPEG, PNG or WebP bytes)")
        }
    }
    let limit = service.configuration.maxBodyBytes
    if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
        throw APIError(status: .contentTooLarge, message: "body of \(length) bytes is over the limit of \(limit) bytes")
    }
    var body: ByteBuffer
    do {
        body = try await request.body.collect(upTo: limit)
    } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
        throw APIError(status: .contentTooLarge, message: "body is over the limit of \(limit) bytes")
    }
    guard body.readableBytes > 0 else {
        throw APIError(status: .badRequest, message: "empty body: send the image bytes (JPEG, PNG or WebP) as the body")
    }
    let data = Data(body.readBytes(length: body.readableBytes) ?? [])
    return jsonResponse(try await service.caption(data, options: options))
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
        } catch let error as APIError {
            return Self.error(error.status, error.message)
        } catch let error as ImageError {
            if case .unrecognizedFormat = error {
                return Self.error(.unsupportedMediaType, error.description)
            }
            return Self.error(.badRequest, "bad image: \(error.description)")
        } catch let error as LightCapError {
            if case .invalidArgument = error { return Self.error(.badRequest, error.description) }
            return Self.error(.internalServerError, error.description)
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
            return Self.error(.internalServerError, "\(error)")
        }
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        jsonResponse(ErrorBody(error: message), status: status, headers: headers)
    }
}

/// `{"error": "..."}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var error: String
}
