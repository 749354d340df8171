// Hostile input: a typed ImageError for each, never a crash, a hang or a giant allocation.
import Foundation
import LightCapTestSupport
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

final class PNGFastPathTests: XCTestCase {
    /// The libdeflate fast path against libspng (its twin) on every fixture PNG it accepts, and on
    /// each hostile PNG (where it must decline or agree).
    func testFastPathEqualsLibspng() throws {
        let (dir, m) = try ImageFixtures.manifest()
        var accepted = 0
        let files = m.cases.map(\.file).filter { $0.hasSuffix(".png") } + m.hostile.map(\.file).filter { $0.hasSuffix(".png") }
        for f in files {
            let data = try Data(contentsOf: dir.appendingPathComponent(f))
            guard !data.isEmpty, let fast = try? PNGFastPath.decode(data, limits: .init()) else { continue }
            accepted += 1
            let (twin, orientation) = try PNGDecoder.decode(data, limits: .init())
            XCTAssertEqual(fast.0.bytes, twin.bytes, f)
            XCTAssertEqual(fast.0.channels, twin.channels, f)
            XCTAssertEqual(fast.1, orientation, f)
        }
        XCTAssertGreaterThanOrEqual(accepted, 10, "the fast path should take the 8-bit RGB/RGBA fixtures")
    }
}

/// Claimed sizes and empty files: rejected before any allocation, and without leaking.
extension HostileImageTests {
    /// A PNG of signature, IHDR (`width` x `height`, 8-bit RGBA), one IDAT of `idat` and IEND,
    /// every CRC right.
    static func png(width: UInt32, height: UInt32, idat: [UInt8]) -> Data {
        func crc32(_ bytes: [UInt8]) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            }
            return ~c
        }
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let typed = Array(type.utf8) + body
            return be(UInt32(body.count)) + typed + be(crc32(typed))
        }
        let ihdr = be(width) + be(height) + [8, 6, 0, 0, 0]
        return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", idat)
                    + chunk("IEND", []))
    }

    /// The peak resident set of this process, in bytes.
    static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }

    /// A 70-byte PNG claiming 9000 x 9000 RGBA (within the default 100-megapixel limit) is refused
    /// from its size alone: its pixel rows (324 MB) cannot fit in 70 bytes of deflate data, and
    /// neither the fast path nor libspng may allocate them first.
    func testPNGClaimingMorePixelsThanItsBytesHoldIsRejectedBeforeAllocating() throws {
        let data = Self.png(width: 9000, height: 9000, idat: [0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01])
        let before = Self.peakResidentBytes()
        XCTAssertThrowsError(try ImageDecoder.decode(data)) { e in
            guard case ImageError.truncated(.png, let detail) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(detail.contains("9000x9000"), detail)
        }
        XCTAssertLessThan(Self.peakResidentBytes() - before, 100 << 20, "the decoder allocated the claimed pixels")
        // A real file of the same kind whose data is all there still decodes (the bound is deflate's, 1032:1).
        let rows = [UInt8](repeating: 0, count: 16 * (1 + 16 * 4))
        let small = Self.png(width: 16, height: 16, idat: Self.zlibStored(rows))
        let image = try ImageDecoder.decode(small)
        XCTAssertEqual(image.width, 16)
    }

    /// A PNG claiming 65535 x 65535 is over the default limit: refused before any pixel buffer.
    func testPNGClaiming65535SquaredIsRejectedByTheLimits() {
        let data = Self.png(width: 65535, height: 65535, idat: [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])
        let before = Self.peakResidentBytes()
        XCTAssertThrowsError(try ImageDecoder.decode(data)) { e in
            guard case ImageError.tooLarge(.png, 65535, 65535, _) = e else { return XCTFail("\(e)") }
        }
        XCTAssertLessThan(Self.peakResidentBytes() - before, 100 << 20)
    }

    /// zlib data holding `bytes` in stored (uncompressed) deflate blocks.
    static func zlibStored(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var rest = bytes[...]
        repeat {
            let block = rest.prefix(65535)
            rest = rest.dropFirst(block.count)
            let n = UInt16(block.count)
            out += [rest.isEmpty ? 1 : 0, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8(~n >> 8)] + block
        } while !rest.isEmpty
        var a: UInt32 = 1, b: UInt32 = 0
        for x in bytes { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        let adler = b << 16 | a
        return out + [UInt8(adler >> 24), UInt8(adler >> 16 & 0xFF), UInt8(adler >> 8 & 0xFF), UInt8(adler & 0xFF)]
    }

    /// Reading an empty image file gives the typed `.empty` and costs no memory (Foundation's
    /// Data(contentsOf:) leaks 4 KiB on each empty file; a batch of many must not grow).
    func testEmptyImageFileLeaksNothing() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-empty-\(getpid()).png")
        FileManager.default.createFile(atPath: url.path, contents: Data())
        defer { try? FileManager.default.removeItem(at: url) }
        let growth = try ProcessMemory.growth(repeating: 10_000) {
            XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: url)) { XCTAssertEqual($0 as? ImageError, .empty) }
        }
        XCTAssertLessThan(growth, 16 << 20, "reading empty files leaks")  // 4 KiB a read would be 40 MB
    }
}
