// WebP through libwebp: lossy, lossless, with or without alpha (still images; animations are
// refused with a typed error).
import CWebP
import Foundation

enum WebPDecoder {
    static func decode(_ data: Data, limits: ImageLimits) throws -> (RawPixels, EXIFOrientation?) {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.bindMemory(to: UInt8.self).baseAddress!
            var features = WebPBitstreamFeatures()
            let status = WebPGetFeatures(base, raw.count, &features)
            switch status {
            case VP8_STATUS_OK: break
            case VP8_STATUS_NOT_ENOUGH_DATA:
                throw ImageError.truncated(format: .webp, detail: "header incomplete")
            default:
                throw ImageError.corrupt(format: .webp, detail: describe(status))
            }
            if features.has_animation != 0 {
                throw ImageError.unsupported(format: .webp, detail: "animated WebP")
            }
            let width = Int(features.width), height = Int(features.height)
            try limits.check(width: width, height: height, format: .webp)
            let channels = features.has_alpha != 0 ? 4 : 3
            var out = [UInt8](repeating: 0, count: width * height * channels)
            let ok = out.withUnsafeMutableBufferPointer { dst -> Bool in
                let stride = Int32(width * channels)
                let r = channels == 4
                    ? WebPDecodeRGBAInto(base, raw.count, dst.baseAddress, dst.count, stride)
                    : WebPDecodeRGBInto(base, raw.count, dst.baseAddress, dst.count, stride)
                return r != nil
            }
            guard ok else {
                // Tell a cut-off file from a corrupt one: does the RIFF size promise more bytes?
                let declared = raw.count >= 8
                    ? Int(raw[4]) | Int(raw[5]) << 8 | Int(raw[6]) << 16 | Int(raw[7]) << 24 : 0
                if declared + 8 > raw.count {
                    throw ImageError.truncated(format: .webp, detail: "RIFF declares \(declared + 8) bytes, have \(raw.count)")
                }
                throw ImageError.corrupt(format: .webp, detail: "bitstream could not be decoded")
            }
            let orientation = EXIFOrientation.fromWebP(raw.bindMemory(to: UInt8.self))
            return (RawPixels(width: width, height: height, channels: channels, bytes: out), orientation)
        }
    }

    static func describe(_ s: VP8StatusCode) -> String {
        switch s {
        case VP8_STATUS_OUT_OF_MEMORY: return "out of memory"
        case VP8_STATUS_INVALID_PARAM: return "invalid parameter"
        case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error"
        case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature"
        case VP8_STATUS_SUSPENDED: return "suspended"
        case VP8_STATUS_USER_ABORT: return "aborted"
        case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data"
        default: return "status \(s.rawValue)"
        }
    }
}
