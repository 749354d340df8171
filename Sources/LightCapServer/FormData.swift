// FormData: the fields of a multipart/form-data body (RFC 7578 over RFC 2046's multipart
// syntax), parsed strictly from the whole body in memory.
//
// Why not a library: MultipartKit 4.7.1 (the only one installable here) stops the process on a
// part header name holding a byte over 0x7F (it indexes a 128-entry table with the byte), which
// any client could send; the fuzz target `request` found it (docs/FUZZING.md).

import Foundation
import NIOCore

enum FormData {
    /// One field of a form: the `name` of its Content-Disposition header (nil without one) and
    /// its bytes.
    struct Field {
        var name: String?
        var bytes: Data
    }

    /// Every part of `body`, in order. A body needs a first line `--boundary` (after an optional
    /// preamble), parts of header lines, an empty line and the content, each closed by
    /// CRLF `--boundary`, and the final `--boundary--` (the epilogue after it is ignored).
    /// Anything else is a 400 naming what is wrong and in which part.
    static func fields(_ body: ByteBuffer, boundary: String) throws -> [Field] {
        try body.withUnsafeReadableBytes { try fields(in: $0, boundary: boundary) }
    }

    static func fields(in bytes: UnsafeRawBufferPointer, boundary: String) throws -> [Field] {
        guard validBoundary(boundary) else {
            throw APIError(status: .badRequest, message: "multipart/form-data boundary '\(boundary.prefix(80))' is not 1 to 200 letters, digits or '()+_,-./:=? (RFC 2046)")
        }
        let dashBoundary = Array("--\(boundary)".utf8)
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var position: Int
        if matches(bytes, at: 0, dashBoundary) {
            position = dashBoundary.count
        } else if let found = find(delimiter, in: bytes, from: 0) {  // after a preamble
            position = found + delimiter.count
        } else {
            throw malformed("no line starts with the boundary '--\(boundary)'")
        }
        var fields: [Field] = []
        while true {
            let part = fields.count + 1
            if matches(bytes, at: position, dashes) { return fields }  // the close delimiter
            while position < bytes.count, bytes[position] == space || bytes[position] == tab { position += 1 }
            guard matches(bytes, at: position, crlf) else {
                throw malformed("the boundary line before part \(part) does not end in CRLF (nor in '--', the form's end)")
            }
            position += 2
            var name: String?
            while true {
                guard let end = find(crlf, in: bytes, from: position) else {
                    throw malformed("the headers of part \(part) are not ended by an empty line")
                }
                if end == position {
                    position += 2
                    break
                }
                let (header, value) = try headerField(UnsafeRawBufferPointer(rebasing: bytes[position..<end]), part: part)
                if header == "content-disposition" { name = RequestBody.mediaType(value).parameters["name"] }
                position = end + 2
            }
            guard let end = find(delimiter, in: bytes, from: position) else {
                throw malformed("part \(part) is not closed by the boundary (is the body cut short?)")
            }
            fields.append(Field(name: name, bytes: Data(UnsafeRawBufferPointer(rebasing: bytes[position..<end]))))
            position = end + delimiter.count
        }
    }

    private static let crlf: [UInt8] = [13, 10]
    /// "--" right after a delimiter: the close delimiter.
    private static let dashes: [UInt8] = [45, 45]
    private static let space: UInt8 = 32
    private static let tab: UInt8 = 9

    private static func malformed(_ what: String) -> APIError {
        APIError(status: .badRequest, message: "malformed multipart/form-data body: \(what)")
    }

    /// `name: value` → (the lower-cased name, the value without surrounding blanks). The name is
    /// an HTTP token (RFC 9110); the value is read as UTF-8 (browsers send file names so).
    private static func headerField(_ line: UnsafeRawBufferPointer, part: Int) throws -> (String, String) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0,
              line[..<colon].allSatisfy(isTokenCharacter) else {
            let shown = String(decoding: line.prefix(40), as: UTF8.self)
            throw malformed("part \(part) has a header line that is not 'Name: value' with a token name: '\(shown)'")
        }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: line[..<colon]), as: UTF8.self).lowercased()
        let value = String(decoding: UnsafeRawBufferPointer(rebasing: line[(colon + 1)...]), as: UTF8.self)
        return (name, value.trimmingCharacters(in: .whitespaces))
    }

    /// RFC 9110's tchar: letters, digits and !#$%&'*+-.^_`|~.
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        isLetterOrDigit(byte) || tokenPunctuation.contains(byte)
    }

    private static let tokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)

    private static func isLetterOrDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at position: Int, _ pattern: [UInt8]) -> Bool {
        position + pattern.count <= bytes.count && bytes[position..<(position + pattern.count)].elementsEqual(pattern)
    }

    /// The first offset at or after `start` where `pattern` occurs. Candidates are the places of
    /// the pattern's first byte (CR, found by memchr), which occurs nowhere else in the pattern
    /// (a boundary has no control characters: `validBoundary`), so the comparisons from two
    /// candidates never overlap: linear in the bytes whatever they are, no quadratic search for
    /// a hostile body.
    private static func find(_ pattern: [UInt8], in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let last = bytes.count - pattern.count
        var i = start
        while i <= last {
            guard let hit = memchr(base + i, Int32(pattern[0]), last - i + 1) else { return nil }
            let candidate = UnsafeRawPointer(hit) - base
            if matches(bytes, at: candidate, pattern) { return candidate }
            i = candidate + 1
        }
        return nil
    }

    /// RFC 2046's boundary: 1 to 70 of its characters (letters, digits, '()+_,-./:=? and the space,
    /// not last); up to 200 accepted, as some clients make them longer.
    static func validBoundary(_ boundary: String) -> Bool {
        let bytes = Array(boundary.utf8)
        return (1...200).contains(bytes.count) && bytes.last != space
            && bytes.allSatisfy { isLetterOrDigit($0) || boundaryPunctuation.contains($0) }
    }

    private static let boundaryPunctuation = Set("'()+_,-./:=? ".utf8)
}
