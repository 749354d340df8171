// JPEG through libjpeg-turbo's TurboJPEG API: baseline, progressive, grayscale, CMYK/YCCK, with
// DCT-domain downscaling (1/2, 1/4, 1/8, as Pillow's draft) for large photos.
import CTurboJPEG
import Foundation

/// A JPEG DCT scaling factor `num / denom` (TurboJPEG's `tjscalingfactor`).
public struct JPEGScale: Sendable, Equatable, CustomStringConvertible {
    public var num: Int
    public var denom: Int
    public init(num: Int, denom: Int) { self.num = num; self.denom = denom }
    public static let full = JPEGScale(num: 1, denom: 1)
    /// `ceil(size * num / denom)`, TurboJPEG's TJSCALED.
    public func scaled(_ size: Int) -> Int { (size * num + denom - 1) / denom }
    public var description: String { "\(num)/\(denom)" }

    /// The scale for an image needed at `minimumSide`: Pillow's draft rule (JpegImagePlugin's
    /// `draft` asked for `minimumSide` x `minimumSide`), the largest 1/s of s = 8, 4, 2 with
    /// s <= min(width / minimumSide, height / minimumSide) in integer division, else 1/1. The
    /// Python reference decodes model inputs by that rule too (`load_image(path, draft_side=S)`),
    /// so both see the same pixels: a JPEG under twice the model's side is decoded whole; the
    /// other factors libjpeg-turbo offers (3/8, 5/8, ...) are left unused.
    public static func choose(width: Int, height: Int, minimumSide: Int?) -> JPEGScale {
        guard let m = minimumSide, m > 0 else { return .full }
        let ratio = min(width / m, height / m)
        for s in [8, 4, 2] where s <= ratio { return JPEGScale(num: 1, denom: s) }
        return .full
    }
}

/// Decodes JPEG data with TurboJPEG.
enum JPEGDecoder {
    /// What the header says, read without decoding pixels.
    struct Header {
        var width: Int
        var height: Int
        var colorspace: Int32
    }

    static func header(_ handle: tjhandle, _ base: UnsafePointer<UInt8>, _ count: Int) throws -> Header {
        var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, cs: Int32 = 0
        if tjDecompressHeader3(handle, base, UInt(count), &w, &h, &sub, &cs) != 0 {
            let message = errorString(handle)
            if message.contains("Premature end") {
                throw ImageError.truncated(format: .jpeg, detail: message)
            }
            throw ImageError.corrupt(format: .jpeg, detail: message)
        }
        if w <= 0 || h <= 0 {
            // libjpeg stops at the end of the data without a frame header (tables only).
            let hasFrame = (0..<max(0, count - 1)).contains { base[$0] == 0xFF && (0xC0...0xCF).contains(base[$0 + 1])
                && base[$0 + 1] != 0xC4 && base[$0 + 1] != 0xC8 && base[$0 + 1] != 0xCC }
            if !hasFrame { throw ImageError.truncated(format: .jpeg, detail: "no frame header before the end of data") }
            throw ImageError.invalidDimensions(format: .jpeg, width: Int(w), height: Int(h))
        }
        return Header(width: Int(w), height: Int(h), colorspace: cs)
    }

    static func errorString(_ handle: tjhandle) -> String {
        guard let s = tjGetErrorStr2(handle) else { return "unknown TurboJPEG error" }
        return String(cString: s)
    }

    /// Decodes `data` at `scale` (or the scale chosen from `minimumSide`) to RGB; EXIF is not applied here.
    static func decode(_ data: Data, limits: ImageLimits, minimumSide: Int?, scale forced: JPEGScale? = nil)
        throws -> RawPixels
    {
        guard let handle = tjInitDecompress() else {
            throw ImageError.corrupt(format: .jpeg, detail: "tjInitDecompress failed")
        }
        defer { tjDestroy(handle) }
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> RawPixels in
            let base = raw.bindMemory(to: UInt8.self).baseAddress!
            let head = try header(handle, base, raw.count)
            try limits.check(width: head.width, height: head.height, format: .jpeg)
            let scale = forced ?? JPEGScale.choose(width: head.width, height: head.height, minimumSide: minimumSide)
            let w = scale.scaled(head.width), h = scale.scaled(head.height)
            let cmyk = head.colorspace == Int32(TJCS_CMYK.rawValue) || head.colorspace == Int32(TJCS_YCCK.rawValue)
            let channels = cmyk ? 4 : 3
            var out = [UInt8](repeating: 0, count: w * h * channels)
            let format = cmyk ? TJPF_CMYK : TJPF_RGB
            let flags = TJFLAG_LIMITSCANS | TJFLAG_ACCURATEDCT
            let rc = out.withUnsafeMutableBufferPointer { dst in
                tjDecompress2(handle, base, UInt(raw.count), dst.baseAddress, Int32(w), Int32(w * channels),
                              Int32(h), Int32(format.rawValue), flags)
            }
            if rc != 0 {
                let message = errorString(handle)
                let fatal = tjGetErrorCode(handle) == Int32(TJERR_FATAL.rawValue)
                if message.contains("Premature end") {
                    throw ImageError.truncated(format: .jpeg, detail: message)
                }
                if fatal { throw ImageError.corrupt(format: .jpeg, detail: message) }
                // Other warnings (e.g. extraneous bytes before a marker) are accepted, as Pillow does.
            }
            if cmyk { return RawPixels(width: w, height: h, channels: 3, bytes: cmykToRGB(out)) }
            return RawPixels(width: w, height: h, channels: 3, bytes: out)
        }
    }

    /// Pillow's CMYK -> RGB (Convert.c cmyk2rgb): `nk = 255 - k; out = nk - MULDIV255(c, nk)`,
    /// on CMYK as Pillow holds it: stored values inverted, Adobe's convention, which Pillow assumes
    /// for every CMYK/YCCK JPEG ("CMYK;I").
    static func cmykToRGB(_ stored: [UInt8]) -> [UInt8] {
        let n = stored.count / 4
        var out = [UInt8](repeating: 0, count: n * 3)
        @inline(__always) func muldiv255(_ a: Int, _ b: Int) -> Int {
            let t = a * b + 128
            return ((t >> 8) + t) >> 8
        }
        for i in 0..<n {
            let v = (255 - Int(stored[i * 4]), 255 - Int(stored[i * 4 + 1]),
                     255 - Int(stored[i * 4 + 2]), 255 - Int(stored[i * 4 + 3]))
            let nk = 255 - v.3
            out[i * 3] = UInt8(clamping: nk - muldiv255(v.0, nk))
            out[i * 3 + 1] = UInt8(clamping: nk - muldiv255(v.1, nk))
            out[i * 3 + 2] = UInt8(clamping: nk - muldiv255(v.2, nk))
        }
        return out
    }
}
