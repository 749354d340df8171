// Who may call the service: an optional API key (`Authorization: Bearer <key>`) on every route
// but the probes, and the origins a browser may call it from (CORS).

import Foundation
import HTTPTypes
import Hummingbird

/// 401 unless the request carries `Authorization: Bearer <key>`; /healthz and /readyz are open.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        if ["/healthz", "/readyz"].contains(request.uri.path) { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        guard given.hasPrefix("Bearer "), Self.equal(Array(given.utf8.dropFirst(7)), Array(key.utf8)) else {
            var headers = HTTPFields()
            headers[.wwwAuthenticate] = "Bearer"
            throw APIError(status: .unauthorized,
                           message: given.isEmpty ? "missing Authorization: Bearer <key>" : "wrong API key", headers: headers)
        }
        return try await next(request, context)
    }

    /// Compares without stopping at the first difference.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = a.count ^ b.count
        for i in 0..<min(a.count, b.count) { difference |= Int(a[i] ^ b[i]) }
        return difference == 0
    }
}

/// CORS for a list of origins (`*`: any). A preflight (OPTIONS with an Origin) is answered 204
/// with the allowed methods and headers; other answers to an allowed origin carry
/// Access-Control-Allow-Origin and expose X-Request-ID. A page from another origin gets no CORS
/// headers, so the browser keeps the answer from it. (Hummingbird's CORSMiddleware takes a list
/// only as variadic arguments, fixed when compiled.)
struct CORSAllowList<Context: RequestContext>: RouterMiddleware {
    let origins: Set<String>

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        let allowed = origins.contains("*") ? "*" : origins.contains(origin) ? origin : nil
        var headers = HTTPFields()
        if let allowed {
            headers[.accessControlAllowOrigin] = allowed
            headers[.accessControlExposeHeaders] = "X-Request-ID"
        }
        headers[.vary] = "Origin"
        if request.method == .options {
            headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
            headers[.accessControlAllowHeaders] = "Accept, Authorization, Content-Type, X-Request-ID"
            headers[.accessControlMaxAge] = "600"
            return Response(status: .noContent, headers: headers)
        }
        var response = try await next(request, context)
        for field in headers { response.headers[field.name] = field.value }
        return response
    }
}
