// RequestBody: the forms a caption request's body may take, read within the size limit:
// the raw image bytes; multipart/form-data (FormData.swift) with one `image` field, or
// several for `POST /v1/captions`; JSON `{"image": base64, "beam", "max_length"}`.

import Foundation
import HTTPTypes
import Hummingbird

/// A caption request's images and the decoding parameters its body carries.
struct RequestBody {
    /// The images, in order.
    var images: [Data]
    /// `beam` / `max_length` from a JSON body, as query-style pairs (the query's checks apply).
    var parameters: [(key: String, value: String)] = []

    /// The media type, lower-cased without parameters ("" when absent), and its parameters.
    static func mediaType(_ header: String?) -> (type: String, parameters: [String: String]) {
        guard let header else { return ("", [:]) }
        let pieces = header.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        var parameters: [String: String] = [:]
        for piece in pieces.dropFirst() {
            guard let eq = piece.firstIndex(of: "=") else { continue }
            var value = piece[piece.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            parameters[piece[..<eq].trimmingCharacters(in: .whitespaces).lowercased()] = value
        }
        return ((pieces.first ?? "").lowercased(), parameters)
    }

    /// Reads `request`'s body: 413 past `limit` (the Content-Length checked before reading),
    /// 415 for a content type that is none of the accepted ones, 400 for a malformed one.
    /// `multiple`: every `image` field of a multipart body (`POST /v1/captions`), at most `maxImages`.
    static func read(_ request: Request, limit: Int, timeout: Double, multiple: Bool = false,
                     maxImages: Int = 1) async throws -> RequestBody {
        let (media, parameters) = try accept(request.headers, limit: limit, multiple: multiple)
        let body = try await collect(request.body, limit: limit, timeout: timeout)
        return try parse(body, media: media, parameters: parameters, multiple: multiple, maxImages: maxImages)
    }

    /// The checks on the headers alone, before any of the body is read: the content type (415
    /// unless accepted, its media type and parameters returned) and the Content-Length (413).
    static func accept(_ headers: HTTPFields, limit: Int, multiple: Bool) throws
        -> (media: String, parameters: [String: String]) {
        let (media, parameters) = mediaType(headers[.contentType])
        let accepted = media.isEmpty || media.hasPrefix("image/") || media == "application/octet-stream"
            || media == "multipart/form-data" || (media == "application/json" && !multiple)
        guard accepted && (!multiple || media == "multipart/form-data") else {
            let wanted = multiple ? "multipart/form-data with one `image` field per image"
                : "JPEG, PNG or WebP bytes, multipart/form-data with an `image` field, or JSON {\"image\": base64}"
            throw APIError(status: .unsupportedMediaType,
                           message: "content type '\(headers[.contentType] ?? "")' is not accepted (send \(wanted))")
        }
        if let length = headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError(status: .contentTooLarge, message: "body of \(length) bytes is over the limit of \(limit) bytes")
        }
        return (media, parameters)
    }

    /// The images and parameters of a whole `body` whose headers `accept` passed.
    static func parse(_ body: ByteBuffer, media: String, parameters: [String: String], multiple: Bool,
                      maxImages: Int) throws -> RequestBody {
        guard body.readableBytes > 0 else {
            throw APIError(status: .badRequest, message: "empty body: send the image bytes (JPEG, PNG or WebP) as the body")
        }
        switch media {
        case "multipart/form-data":
            guard let boundary = parameters["boundary"], !boundary.isEmpty else {
                throw APIError(status: .badRequest, message: "multipart/form-data without a boundary parameter")
            }
            let images = try FormData.fields(body, boundary: boundary).filter { $0.name == "image" }.map(\.bytes)
            guard !images.isEmpty else {
                throw APIError(status: .badRequest, message: "the form has no `image` field (send the file as a field named image)")
            }
            guard multiple || images.count == 1 else {
                throw APIError(status: .badRequest, message: "the form has \(images.count) `image` fields; POST /v1/captions takes several")
            }
            guard images.count <= maxImages else {
                throw APIError(status: .contentTooLarge, message: "the form has \(images.count) images; at most \(maxImages) per request")
            }
            // One image: an empty field is the request's error. Several: each is captioned or
            // answered with its own error in its place (CaptionService), an empty one too.
            if images.count == 1 && images[0].isEmpty {
                throw APIError(status: .badRequest, message: "the form's `image` field is empty")
            }
            return RequestBody(images: images)
        case "application/json":
            return try json(body)
        default:
            return RequestBody(images: [Data(body.readableBytesView)])
        }
    }

    /// The whole body: 413 past `limit` bytes, 408 when it has not all arrived after `timeout`
    /// seconds (a client trickling bytes holds no caption slot, and not for long).
    static func collect(_ body: Hummingbird.RequestBody, limit: Int, timeout: Double) async throws -> ByteBuffer {
        try await withDeadline(seconds: timeout, onTimeout: {
            var headers = HTTPFields()
            headers[.connection] = "close"
            return APIError(status: .requestTimeout, message: String(format: "the body did not arrive within %g s", timeout),
                            headers: headers)
        }) {
            do {
                return try await body.collect(upTo: limit)
            } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
                throw APIError(status: .contentTooLarge, message: "body is over the limit of \(limit) bytes")
            }
        }
    }

    /// `{"image": base64, "beam": N, "max_length": N}`; other keys are an error (typos surface).
    static func json(_ body: ByteBuffer) throws -> RequestBody {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            throw APIError(status: .badRequest, message: "the JSON body is not an object like {\"image\": \"<base64>\"}")
        }
        if let unknown = object.keys.sorted().first(where: { !["image", "beam", "max_length"].contains($0) }) {
            throw APIError(status: .badRequest, message: "unknown key '\(unknown)' in the JSON body (known: image, beam, max_length)")
        }
        struct Fields: Decodable {
            var image: String?
            var beam: Int?
            var max_length: Int?
        }
        guard let fields = try? JSONDecoder().decode(Fields.self, from: Data(body.readableBytesView)) else {
            throw APIError(status: .badRequest, message: "in the JSON body, image must be a string and beam, max_length integers")
        }
        guard let text = fields.image else {
            throw APIError(status: .badRequest, message: "the JSON body needs \"image\": the image bytes in base64")
        }
        guard let data = Data(base64Encoded: text, options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw APIError(status: .badRequest, message: "\"image\" is not valid base64")
        }
        var parameters: [(key: String, value: String)] = []
        if let beam = fields.beam { parameters.append(("beam", String(beam))) }
        if let maxLength = fields.max_length { parameters.append(("max_length", String(maxLength))) }
        return RequestBody(images: [data], parameters: parameters)
    }
}
