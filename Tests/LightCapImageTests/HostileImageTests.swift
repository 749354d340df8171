// Hostile input: a typed ImageError for each, never a crash, a hang or a giant allocation.
import Foundation
import XCTest
@testable import LightCapImage

final class HostileImageTests: XCTestCase {
    static func caseName(_ e: ImageError) -> String {
        switch e {
        case .empty: return "empty"
        case .unrecognizedFormat: return "unrecognizedFormat"
        case .invalidDimensions: return "invalidDimensions"
        case .tooLarge: return "tooLarge"
        case .truncated: return "truncated"
        case .corrupt: return "corrupt"
        case .unsupported: return "unsupported"
        case .unreadable: return "unreadable"
        }
    }

    func testEachHostileFileGetsItsTypedError() throws {
        let (dir, m) = try ImageFixtures.manifest()
        XCTAssertGreaterThanOrEqual(m.hostile.count, 15)
        for h in m.hostile {
            do {
                let img = try ImageDecoder.decode(contentsOf: dir.appendingPathComponent(h.file))
                if h.error == "recoverable" { continue }
                XCTFail("\(h.file): decoded \(img.width)x\(img.height), expected \(h.error)")
            } catch let e as ImageError {
                if h.error == "recoverable" { continue }
                XCTAssertEqual(Self.caseName(e), h.error, "\(h.file): \(e)")
                XCTAssertFalse(e.description.isEmpty)
            }
        }
    }

    func testPixelLimitRejectsBeforeDecoding() throws {
        let (dir, m) = try ImageFixtures.manifest()
        for c in m.cases where c.decoded[0] * c.decoded[1] > 1000 {
            let data = try Data(contentsOf: dir.appendingPathComponent(c.file))
            XCTAssertThrowsError(try ImageDecoder.decode(data, limits: ImageLimits(maxPixels: 1000))) { e in
                guard case ImageError.tooLarge = e else { return XCTFail("\(c.name): \(e)") }
            }
        }
    }

    func testEveryPrefixOfEveryFormatFailsCleanly() throws {
        let (dir, m) = try ImageFixtures.manifest()
        for name in ["jpeg_progressive", "png_palette_trns", "webp_lossy_alpha", "jpeg_exif_6", "png_rgb16"] {
            let c = m.cases.first { $0.name == name }!
            let data = try Data(contentsOf: dir.appendingPathComponent(c.file))
            let step = max(1, data.count / 97)
            // Every cut before the final 12-byte chunk (PNG IEND; WebP/JPEG tails) loses pixel data.
            for n in stride(from: 0, to: data.count - 12, by: step) {
                do {
                    _ = try ImageDecoder.decode(data.prefix(n))
                    XCTFail("\(name) cut at \(n) of \(data.count) bytes decoded without error")
                } catch is ImageError {
                }
            }
        }
    }

    func testRandomBytesAfterEachSignature() {
        var rng = SystemRandomNumberGenerator()
        let signatures: [[UInt8]] = [[0xFF, 0xD8, 0xFF], [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A],
                                     Array("RIFF".utf8) + [64, 0, 0, 0] + Array("WEBPVP8 ".utf8)]
        for sig in signatures {
            for len in [0, 1, 7, 30, 200, 3000] {
                let data = Data(sig + (0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) })
                XCTAssertThrowsError(try ImageDecoder.decode(data))
            }
        }
    }

    func testEmptyAndUnreadable() {
        XCTAssertThrowsError(try ImageDecoder.decode(Data())) { XCTAssertEqual($0 as? ImageError, .empty) }
        XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: "/nonexistent/x.png"))) {
            guard case ImageError.unreadable = $0 else { return XCTFail("\($0)") }
        }
    }

    func testEXIFParserNeverReadsOutOfBounds() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0...64, using: &rng)
            var b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n >= 8, Bool.random(using: &rng) { b[0] = 0x49; b[1] = 0x49; b[2] = 42; b[3] = 0 }
            _ = EXIFOrientation.parse(tiff: b)
        }
        // A well-formed little- and big-endian IFD0 with only the orientation tag.
        let le: [UInt8] = [0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]
        let be: [UInt8] = [0x4D, 0x4D, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0]
        XCTAssertEqual(EXIFOrientation.parse(tiff: le), .right)
        XCTAssertEqual(EXIFOrientation.parse(tiff: be), .left)
        XCTAssertNil(EXIFOrientation.parse(tiff: Array(le.prefix(19))))
    }
}
