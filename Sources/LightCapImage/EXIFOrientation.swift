// EXIF orientation: find the TIFF block (JPEG APP1 "Exif\0\0", PNG eXIf, WebP EXIF chunk), read
// tag 0x0112 from IFD0 with every offset bounds-checked, and apply the transform as Pillow's
// ImageOps.exif_transpose does.
import Foundation

/// The eight EXIF orientations (tag 0x0112). `rawValue` is the tag's value.
public enum EXIFOrientation: Int, Sendable, CaseIterable {
    case up = 1, upMirrored, down, downMirrored, leftMirrored, right, rightMirrored, left

    /// Reads the orientation from a TIFF block (the payload after "Exif\0\0"); nil when absent,
    /// malformed or out of range. Never reads outside `tiff`.
    public static func parse(tiff: [UInt8]) -> EXIFOrientation? {
        guard tiff.count >= 8 else { return nil }
        let little: Bool
        switch (tiff[0], tiff[1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ o: Int) -> Int? {
            guard o >= 0, o + 2 <= tiff.count else { return nil }
            return little ? Int(tiff[o]) | Int(tiff[o + 1]) << 8 : Int(tiff[o]) << 8 | Int(tiff[o + 1])
        }
        func u32(_ o: Int) -> Int? {
            guard let a = u16(o), let b = u16(o + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for i in 0..<count {
            let entry = ifd + 2 + i * 12
            guard let tag = u16(entry), let type = u16(entry + 2), let n = u32(entry + 4) else { return nil }
            guard tag == 0x0112 else { continue }
            guard n >= 1 else { return nil }
            let value: Int?
            switch type {
            case 3: value = u16(entry + 8)   // SHORT, stored in the value field
            case 4: value = u32(entry + 8)   // LONG
            default: value = nil
            }
            return value.flatMap { EXIFOrientation(rawValue: $0) }
        }
        return nil
    }

    /// The orientation in a JPEG's first APP1 "Exif" segment (markers walked up to SOS).
    static func fromJPEG(_ data: UnsafeBufferPointer<UInt8>) -> EXIFOrientation? {
        var p = 2
        while p + 4 <= data.count {
            guard data[p] == 0xFF else { return nil }
            let marker = data[p + 1]
            if marker == 0xFF { p += 1; continue }            // fill byte
            if marker == 0xDA || marker == 0xD9 { return nil } // SOS / EOI: no more metadata
            if (0xD0...0xD7).contains(marker) || marker == 0x01 { p += 2; continue }
            let length = Int(data[p + 2]) << 8 | Int(data[p + 3])
            guard length >= 2, p + 2 + length <= data.count else { return nil }
            let start = p + 4, end = p + 2 + length
            if marker == 0xE1, end - start >= 6,
               data[start..<start + 6].elementsEqual([0x45, 0x78, 0x69, 0x66, 0, 0]) {
                return parse(tiff: Array(data[(start + 6)..<end]))
            }
            p = end
        }
        return nil
    }

    /// The orientation in a WebP's EXIF chunk (RIFF chunks walked, bounds-checked).
    static func fromWebP(_ data: UnsafeBufferPointer<UInt8>) -> EXIFOrientation? {
        var p = 12
        while p + 8 <= data.count {
            let size = Int(data[p + 4]) | Int(data[p + 5]) << 8 | Int(data[p + 6]) << 16 | Int(data[p + 7]) << 24
            let start = p + 8
            guard size >= 0, start + size <= data.count else { return nil }
            if data[p..<p + 4].elementsEqual(Array("EXIF".utf8)) {
                var tiff = Array(data[start..<start + size])
                if tiff.starts(with: [0x45, 0x78, 0x69, 0x66, 0, 0]) { tiff.removeFirst(6) }
                return parse(tiff: tiff)
            }
            p = start + size + (size & 1)
        }
        return nil
    }

    /// Applies the orientation (Pillow's exif_transpose: 2 mirror, 3 rotate 180, 4 flip,
    /// 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise).
    public func apply(to image: RGBImage) -> RGBImage {
        if self == .up { return image }
        let w = image.width, h = image.height
        let swaps = rawValue >= 5
        let ow = swaps ? h : w, oh = swaps ? w : h
        var out = [UInt8](repeating: 0, count: image.pixels.count)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        let (sx, sy): (Int, Int)
                        switch self {
                        case .up: (sx, sy) = (x, y)
                        case .upMirrored: (sx, sy) = (w - 1 - x, y)          // FLIP_LEFT_RIGHT
                        case .down: (sx, sy) = (w - 1 - x, h - 1 - y)        // ROTATE_180
                        case .downMirrored: (sx, sy) = (x, h - 1 - y)        // FLIP_TOP_BOTTOM
                        case .leftMirrored: (sx, sy) = (y, x)                // TRANSPOSE
                        case .right: (sx, sy) = (y, h - 1 - x)               // ROTATE_270
                        case .rightMirrored: (sx, sy) = (w - 1 - y, h - 1 - x) // TRANSVERSE
                        case .left: (sx, sy) = (w - 1 - y, x)                // ROTATE_90
                        }
                        let s = (sy * w + sx) * 3, d = (y * ow + x) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
