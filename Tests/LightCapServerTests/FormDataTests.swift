// FormData: the multipart/form-data parser of caption requests, on well-formed forms in the
// shapes clients send and on malformed ones, which must be 400s naming the problem.
// (Forms made by a peer, urllib3 and Chromium, go through the live service in
// python/tests/test_server_forms.py and test_web_page.py.)

import Foundation
import NIOCore
@testable import LightCapServer
import XCTest

final class FormDataTests: XCTestCase {
    private func parse(_ text: String, boundary: String = "XyZ") throws -> [FormData.Field] {
        try parse(Array(text.utf8), boundary: boundary)
    }

    private func parse(_ bytes: [UInt8], boundary: String = "XyZ") throws -> [FormData.Field] {
        try FormData.fields(ByteBuffer(bytes: bytes), boundary: boundary)
    }

    private func expectMalformed(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(bytes), file: file, line: line) { error in
            guard let error = error as? APIError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(error.status, .badRequest, file: file, line: line)
            XCTAssertTrue(error.message.hasPrefix("malformed multipart/form-data body: "), error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(fragment), "\(error.message) lacks '\(fragment)'", file: file, line: line)
        }
    }

    func testFieldsInOrderWithTheirNamesAndExactBytes() throws {
        // Content holding CR, LF, a CRLF and a near-copy of the delimiter stays as sent.
        let data: [UInt8] = [0x89, 0x50, 13, 10, 26, 10, 0, 255] + Array("\r\n--XyQ\r\n-".utf8)
        var body = Array("--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n".utf8)
        body += Array("--XyZ\r\ncontent-disposition: form-data; name=\"image\"; filename=\"ph\u{00F6}to;1.png\"\r\nContent-Type: image/png\r\n\r\n".utf8)
        body += data + Array("\r\n--XyZ--\r\n".utf8)
        let fields = try parse(body)
        XCTAssertEqual(fields.map(\.name), ["note", "image"])
        XCTAssertEqual(Array(fields[0].bytes), Array("hi".utf8))
        XCTAssertEqual(Array(fields[1].bytes), data)
    }

    func testPreambleEpiloguePaddingEmptyPartsAndNoHeaders() throws {
        // RFC 2046: a preamble before the first boundary line and an epilogue after the last are
        // ignored; blanks may follow a boundary; a part may have no headers or no content.
        let fields = try parse("This is a preamble.\r\n--XyZ \t\r\n\r\nno headers\r\n--XyZ\r\nContent-Disposition: form-data; name=empty\r\n\r\n\r\n--XyZ--epilogue\r\n--XyZ\r\n")
        XCTAssertEqual(fields.map(\.name), [nil, "empty"])
        XCTAssertEqual(String(decoding: fields[0].bytes, as: UTF8.self), "no headers")
        XCTAssertTrue(fields[1].bytes.isEmpty)
        XCTAssertEqual(try parse("--XyZ--").count, 0)
    }

    func testMalformedBodiesNameTheProblem() {
        expectMalformed(Array("garbage".utf8), "no line starts with the boundary '--XyZ'")
        expectMalformed(Array("preamble--XyZ\r\n\r\nx".utf8), "no line starts")  // not at a line's start
        expectMalformed(Array("--XyZ!\r\n\r\nx\r\n--XyZ--".utf8), "before part 1 does not end in CRLF")
        expectMalformed(Array("--XyZ\r\nContent-Disposition: form-data; name=a\r\n".utf8), "headers of part 1 are not ended")
        expectMalformed(Array("--XyZ\r\n\r\nabc".utf8), "part 1 is not closed by the boundary")
        expectMalformed(Array("--XyZ\r\n\r\na\r\n--XyZ\r\nno colon here\r\n\r\nb\r\n--XyZ--".utf8), "part 2 has a header line")
        expectMalformed(Array("--XyZ\r\n: empty name\r\n\r\nb\r\n--XyZ--".utf8), "header line")
        expectMalformed(Array("--XyZ\r\n folded: no\r\n\r\nb\r\n--XyZ--".utf8), "header line")
    }

    func testBoundariesOutsideRFC2046AreRefused() throws {
        for boundary in ["a\rb", "tab\there", "ends in space ", String(repeating: "b", count: 201), "q\"uote"] {
            XCTAssertThrowsError(try parse("--\(boundary)\r\n\r\nx\r\n--\(boundary)--", boundary: boundary), boundary) { error in
                XCTAssertEqual((error as? APIError)?.status, .badRequest)
                XCTAssertTrue((error as? APIError)?.message.contains("RFC 2046") ?? false, "\(error)")
            }
        }
        for boundary in ["----WebKitFormBoundary7MA4YWxkTrZu0gW", "------------------------d74496d66958873e", "a'()+_,-./:=? b"] {
            XCTAssertEqual(try parse("--\(boundary)\r\n\r\nx\r\n--\(boundary)--", boundary: boundary).count, 1, boundary)
        }
    }

    /// The input the `request` fuzz target found: a part header name holding byte 0xDA, on which
    /// MultipartKit 4.7.1 indexed past its 128-entry table and stopped the process.
    func testHeaderNameBytesOver127AreAnErrorNotACrash() {
        for byte in [0x80, 0xDA, 0xFF] as [UInt8] {
            expectMalformed(Array("--XyZ\r\nC".utf8) + [byte] + Array("ntent-Disposition: form-data; name=\"image\"\r\n\r\nx\r\n--XyZ--".utf8),
                            "part 1 has a header line")
        }
        // The fuzzer's input as it reached the parser: the boundary line in a form, then this header.
        let found = Array("------lightcap0123\r\nC".utf8) + [0xDA] + Array("ntent-Disposition: form-data; name=\"image\"\r\n\r\n".utf8)
            + [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        XCTAssertThrowsError(try parse(found, boundary: "----lightcap0123")) { error in
            XCTAssertEqual((error as? APIError)?.status, .badRequest)
        }
    }

    /// Content made of near-copies of a 70-byte delimiter (each one byte short) is all content.
    func testNearDelimitersInsideContentStayContent() throws {
        let boundary = String(repeating: "b", count: 70)
        let near = Array("\r\n--\(String(repeating: "b", count: 69))".utf8)
        let content = Array([[UInt8]](repeating: near, count: 20_000).joined())
        let fields = try parse(Array("--\(boundary)\r\n\r\n".utf8) + content + Array("\r\n--\(boundary)--".utf8), boundary: boundary)
        XCTAssertEqual(fields.count, 1)
        XCTAssertEqual(Array(fields[0].bytes), content)
    }
}
