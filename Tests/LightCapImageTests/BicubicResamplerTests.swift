// The fast resampler against its plain twin (Pillow's loops), on random images of odd shapes.
import XCTest
@testable import LightCapImage

final class BicubicResamplerTests: XCTestCase {
    func randomImage(_ w: Int, _ h: Int, seed: UInt64) -> RGBImage {
        var s = seed &* 0x9E3779B97F4A7C15 | 1
        let px = (0..<(w * h * 3)).map { _ -> UInt8 in
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return UInt8(truncatingIfNeeded: s >> 24)
        }
        return RGBImage(width: w, height: h, pixels: px)
    }

    func testFastResizeEqualsReference() {
        let shapes = [(1, 1, 5, 3), (3, 1, 2, 9), (17, 13, 7, 5), (40, 9, 40, 30), (9, 40, 33, 40),
                      (64, 48, 21, 16), (31, 77, 100, 13), (300, 200, 224, 149), (5, 5, 5, 5)]
        for (i, (w, h, ow, oh)) in shapes.enumerated() {
            let img = randomImage(w, h, seed: UInt64(i + 1))
            let ref = BicubicResampler.Reference.resize(img, width: ow, height: oh)
            XCTAssertEqual(BicubicResampler.resize(img, width: ow, height: oh), ref, "\(w)x\(h)->\(ow)x\(oh)")
        }
    }

    func testFusedCropEqualsResizeThenCrop() {
        for (i, (w, h, s)) in [(50, 30, 16), (30, 50, 16), (1, 9, 8), (9, 1, 8), (101, 57, 24), (24, 31, 24), (7, 7, 24)].enumerated() {
            let img = randomImage(w, h, seed: UInt64(100 + i))
            let pre = CLIPPreprocessor(size: s)
            let (rw, rh) = pre.resizedSize(width: w, height: h)
            let (x, y) = pre.cropOrigin(width: rw, height: rh)
            let twin = BicubicResampler.Reference.crop(BicubicResampler.Reference.resize(img, width: rw, height: rh),
                                                      x: x, y: y, width: s, height: s)
            XCTAssertEqual(pre.resizedAndCropped(img), twin, "\(w)x\(h) S=\(s)")
            XCTAssertEqual(pre.centerCropped(pre.resized(img)), twin, "\(w)x\(h) S=\(s) two steps")
        }
    }

    func testOutputSizeAndCropRounding() {
        let pre = CLIPPreprocessor(size: 224)
        // torchvision: int(224 * long / short); CenterCrop top = int(round((h - 224) / 2.0)), half to even.
        XCTAssertEqual(pre.resizedSize(width: 640, height: 427).width, Int(224.0 * 640.0 / 427.0))
        XCTAssertEqual(pre.resizedSize(width: 3, height: 1000).height, Int(224.0 * 1000.0 / 3.0))
        XCTAssertEqual(pre.cropOrigin(width: 225, height: 227).x, 0)   // round(0.5) == 0
        XCTAssertEqual(pre.cropOrigin(width: 225, height: 227).y, 2)   // round(1.5) == 2
    }

    func testNormalizeIsCHWFloat32() {
        let pre = CLIPPreprocessor(size: 2)
        let img = RGBImage(width: 2, height: 2, pixels: [0, 128, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90])
        let t = pre.normalized(img)
        XCTAssertEqual(t.count, 12)
        XCTAssertEqual(t[0], (Float(0) / 255 - CLIPPreprocessor.clipMean[0]) / CLIPPreprocessor.clipStd[0])
        XCTAssertEqual(t[4 + 1], (Float(20) / 255 - CLIPPreprocessor.clipMean[1]) / CLIPPreprocessor.clipStd[1])
        XCTAssertEqual(t[8 + 3], (Float(90) / 255 - CLIPPreprocessor.clipMean[2]) / CLIPPreprocessor.clipStd[2])
    }
}
