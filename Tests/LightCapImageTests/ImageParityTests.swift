// Parity with Pillow (lightcap_train.reference.preprocess) on the scikit-image photos and synthetic cases.
import Foundation
import XCTest
@testable import LightCapImage

final class ImageParityTests: XCTestCase {
    /// Decoding: lossless formats equal Pillow exactly; JPEG and lossy WebP reported, and held to
    /// the 99% / 1-level bound (same libjpeg-turbo DCT method as Pillow).
    func testDecodeMatchesPillow() throws {
        let (dir, m) = try ImageFixtures.manifest()
        var lossy = ByteAgreement()
        for c in m.cases {
            let got = try ImageDecoder.decode(contentsOf: dir.appendingPathComponent(c.file))
            XCTAssertEqual([got.width, got.height], c.decoded, c.name)
            guard [got.width, got.height] == c.decoded else { continue }
            let want = try ImageFixtures.rgb(dir, "\(c.name).decoded.rgb", c.decoded)
            if c.lossless {
                XCTAssertEqual(got.pixels, want.pixels, "\(c.name): lossless decode differs from Pillow")
            } else {
                var a = ByteAgreement()
                a.add(got.pixels, want.pixels)
                print("decode \(c.name): \(a)")
                lossy.add(got.pixels, want.pixels)
            }
        }
        print("decode, JPEG + lossy WebP, all cases: \(lossy)")
        XCTAssertGreaterThanOrEqual(lossy.fraction, 0.99)
        XCTAssertLessThanOrEqual(lossy.maxDiff, 1)
    }

    /// The 8-bit resize and crop on Pillow's own decoded pixels: must equal Pillow's bytes.
    func testResizeAndCropMatchPillow() throws {
        let (dir, m) = try ImageFixtures.manifest()
        let pre = CLIPPreprocessor(size: m.size, mean: m.mean, std: m.std)
        var resized = ByteAgreement(), cropped = ByteAgreement()
        for c in m.cases {
            let src = try ImageFixtures.rgb(dir, "\(c.name).decoded.rgb", c.decoded)
            let size = pre.resizedSize(width: src.width, height: src.height)
            XCTAssertEqual([size.width, size.height], c.resized_size, "\(c.name): resized size")
            if let r = c.resized {
                let want = try ImageFixtures.rgb(dir, r, c.resized_size)
                let got = pre.resized(src)
                resized.add(got.pixels, want.pixels)
                XCTAssertEqual(got.pixels, want.pixels, "\(c.name): resize differs")
            }
            let want = try ImageFixtures.rgb(dir, "\(c.name).cropped.rgb", c.cropped)
            let got = pre.resizedAndCropped(src)
            cropped.add(got.pixels, want.pixels)
            XCTAssertEqual(got.pixels, want.pixels, "\(c.name): resize+crop differs")
        }
        print("resize vs Pillow: \(resized); resize+crop vs Pillow: \(cropped)")
        XCTAssertGreaterThanOrEqual(resized.fraction, 0.99)
        XCTAssertLessThanOrEqual(resized.maxDiff, 1)
        XCTAssertGreaterThanOrEqual(cropped.fraction, 0.99)
        XCTAssertLessThanOrEqual(cropped.maxDiff, 1)
    }

    /// File -> tensor, end to end (Swift decoder, full-size decode), against Pillow's tensor.
    func testEndToEndTensor() throws {
        let (dir, m) = try ImageFixtures.manifest()
        let pre = CLIPPreprocessor(size: m.size, mean: m.mean, std: m.std)
        var bytes = ByteAgreement()
        var worst: Float = 0
        for c in m.cases {
            let img = try ImageDecoder.decode(contentsOf: dir.appendingPathComponent(c.file))
            let crop = pre.resizedAndCropped(img)
            bytes.add(crop.pixels, try ImageFixtures.rgb(dir, "\(c.name).cropped.rgb", c.cropped).pixels)
            let got = pre.normalized(crop)
            let want = try ImageFixtures.floats(dir.appendingPathComponent("\(c.name).input.f32"))
            XCTAssertEqual(got.count, want.count, c.name)
            var caseMax: Float = 0
            for i in 0..<min(got.count, want.count) { caseMax = max(caseMax, abs(got[i] - want[i])) }
            if c.lossless { XCTAssertEqual(got, want, "\(c.name): tensor differs (lossless input)") }
            worst = max(worst, caseMax)
        }
        print("end to end, 8-bit crop vs Pillow: \(bytes); max |tensor diff| \(worst)")
        XCTAssertGreaterThanOrEqual(bytes.fraction, 0.99)
        XCTAssertLessThanOrEqual(bytes.maxDiff, 1)
        // One 8-bit level is 1 / (255 * std) <= 0.0151 in normalised units.
        XCTAssertLessThanOrEqual(worst, 1.0 / (255 * 0.26) + 1e-6)
    }

    /// DCT-scaled JPEG decoding equals Pillow's draft() at 1/2, 1/4, 1/8.
    func testDCTScalingMatchesPillowDraft() throws {
        let (dir, m) = try ImageFixtures.manifest()
        XCTAssertFalse(m.draft.isEmpty)
        for d in m.draft {
            let data = try Data(contentsOf: dir.appendingPathComponent(d.file))
            let got = try ImageDecoder.decodeJPEG(data, scale: JPEGScale(num: 1, denom: d.denom))
            let want = try ImageFixtures.rgb(dir, d.pixels, d.size)
            XCTAssertEqual([got.width, got.height], d.size, "1/\(d.denom)")
            var a = ByteAgreement()
            a.add(got.pixels, want.pixels)
            print("DCT 1/\(d.denom) vs Pillow draft: \(a)")
            XCTAssertGreaterThanOrEqual(a.fraction, 0.99)
            XCTAssertLessThanOrEqual(a.maxDiff, 1)
        }
    }

    /// `minimumSide` S picks the DCT scale the reference's `load_image(draft_side: S)` (Pillow's
    /// draft) decodes at, at sides on both sides of each scale's boundary.
    func testMinimumSideDecodesAtTheReferenceDraftScale() throws {
        let (dir, m) = try ImageFixtures.manifest()
        let data = try Data(contentsOf: dir.appendingPathComponent(m.draft[0].file))
        XCTAssertFalse(m.draft_sides.isEmpty)
        for row in m.draft_sides {
            let img = try ImageDecoder.decode(data, minimumSide: row.side)
            XCTAssertEqual([img.width, img.height], row.size, "minimumSide \(row.side)")
        }
    }

    /// Content is sniffed from the bytes: a PNG named .jpg decodes as the PNG.
    func testWrongExtension() throws {
        let (dir, m) = try ImageFixtures.manifest()
        let c = m.cases.first { $0.name == m.wrong_extension.same_as }!
        let got = try ImageDecoder.decode(contentsOf: dir.appendingPathComponent(m.wrong_extension.file))
        XCTAssertEqual(got, try ImageFixtures.rgb(dir, "\(c.name).decoded.rgb", c.decoded))
    }
}

final class ConcurrentDecodeTests: XCTestCase {
    /// Decoders keep no shared state: decoding every fixture on several threads at once gives the
    /// sequential results.
    func testConcurrentDecodesAgree() throws {
        let (dir, m) = try ImageFixtures.manifest()
        let files = m.cases.map { dir.appendingPathComponent($0.file) }
        let pre = CLIPPreprocessor(size: 64)
        let sequential = try files.map { pre(try ImageDecoder.decode(contentsOf: $0, minimumSide: 64)) }
        final class Box: @unchecked Sendable { var results: [[Float]?]; init(_ n: Int) { results = Array(repeating: nil, count: n) } }
        let box = Box(files.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: files.count * 2) { i in
            let k = i % files.count
            let r = try? pre(ImageDecoder.decode(contentsOf: files[k], minimumSide: 64))
            lock.lock(); if i >= files.count { box.results[k] = r }; lock.unlock()
        }
        for k in 0..<files.count { XCTAssertEqual(box.results[k], sequential[k], files[k].lastPathComponent) }
    }
}
