// The image type every decoder produces, the limits that keep hostile files in check, the typed
// errors, and format sniffing from the bytes.
import Foundation

/// An 8-bit RGB image, pixels interleaved row by row (`pixels[(y * width + x) * 3 + c]`).
///
/// Decoders composite any alpha channel on white before returning one, so an `RGBImage`
/// is always opaque.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels (> 0).
    public var width: Int
    /// Height in pixels (> 0).
    public var height: Int
    /// `width * height * 3` bytes, RGB interleaved.
    public var pixels: [UInt8]

    /// Wraps `pixels`; the count must be `width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The three channel values at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}

/// Limits checked against the header before any pixel buffer is allocated.
public struct ImageLimits: Sendable, Equatable {
    /// Largest accepted `width * height` of the stored image (before DCT scaling).
    public var maxPixels: Int
    /// Largest accepted width or height.
    public var maxDimension: Int

    /// Defaults: 100 megapixels, 65535 pixels a side.
    public init(maxPixels: Int = 100_000_000, maxDimension: Int = 65_535) {
        self.maxPixels = maxPixels
        self.maxDimension = maxDimension
    }

    /// Throws `ImageError.tooLarge` / `.invalidDimensions` unless `width x height` is acceptable.
    func check(width: Int, height: Int, format: ImageFormat) throws {
        guard width > 0, height > 0 else {
            throw ImageError.invalidDimensions(format: format, width: width, height: height)
        }
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard width <= maxDimension, height <= maxDimension, !overflow, pixels <= maxPixels else {
            throw ImageError.tooLarge(format: format, width: width, height: height, limits: self)
        }
    }
}

/// The container formats LightCapImage decodes, recognised from their first bytes.
public enum ImageFormat: String, Sendable, CaseIterable {
    case jpeg = "JPEG"
    case png = "PNG"
    case webp = "WebP"

    /// The format whose signature starts `data`, or nil (the file name is never consulted).
    public static func sniff(_ data: Data) -> ImageFormat? {
        let b = [UInt8](data.prefix(12))
        if b.count >= 3, b[0] == 0xFF, b[1] == 0xD8, b[2] == 0xFF { return .jpeg }
        if b.count >= 8, b[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return .png
        }
        if b.count >= 12, b[0..<4].elementsEqual(Array("RIFF".utf8)),
           b[8..<12].elementsEqual(Array("WEBP".utf8)) {
            return .webp
        }
        return nil
    }
}

/// Why an image could not be decoded. Every case names the problem; none is a crash.
public enum ImageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input had no bytes.
    case empty
    /// The bytes start with no known signature (shows the first bytes in hex).
    case unrecognizedFormat(prefix: String)
    /// The header declares a zero or negative side.
    case invalidDimensions(format: ImageFormat, width: Int, height: Int)
    /// The header declares more pixels than `ImageLimits` allows (nothing was allocated).
    case tooLarge(format: ImageFormat, width: Int, height: Int, limits: ImageLimits)
    /// The data ends before the image does.
    case truncated(format: ImageFormat, detail: String)
    /// The library rejected the data (bad chunk, CRC, marker, bitstream ...).
    case corrupt(format: ImageFormat, detail: String)
    /// A valid file using a feature this decoder does not support (e.g. animated WebP).
    case unsupported(format: ImageFormat, detail: String)
    /// The file could not be read.
    case unreadable(path: String, detail: String)

    public var description: String {
        switch self {
        case .empty: return "image data is empty"
        case .unrecognizedFormat(let p): return "not a JPEG, PNG or WebP image (first bytes: \(p))"
        case .invalidDimensions(let f, let w, let h):
            return "\(f.rawValue) header declares an invalid size \(w)x\(h)"
        case .tooLarge(let f, let w, let h, let l):
            return "\(f.rawValue) image \(w)x\(h) exceeds the limit of \(l.maxPixels) pixels / \(l.maxDimension) a side"
        case .truncated(let f, let d): return "\(f.rawValue) data is truncated: \(d)"
        case .corrupt(let f, let d): return "\(f.rawValue) data is corrupt: \(d)"
        case .unsupported(let f, let d): return "unsupported \(f.rawValue) feature: \(d)"
        case .unreadable(let p, let d): return "cannot read image file \(p): \(d)"
        }
    }
}

/// Pixels straight from a codec, before alpha compositing: 3 (RGB) or 4 (RGBA) channels.
struct RawPixels {
    var width: Int
    var height: Int
    var channels: Int
    var bytes: [UInt8]

    /// Drops alpha by compositing on white exactly as Pillow's `paste(rgba, mask=alpha)` onto a
    /// white image: `out = DIV255(c * a + 255 * (255 - a))`, `DIV255(t) = ((t+128) + ((t+128) >> 8)) >> 8`.
    func compositedOnWhite() -> RGBImage {
        if channels == 3 { return RGBImage(width: width, height: height, pixels: bytes) }
        let n = width * height
        var out = [UInt8](repeating: 0, count: n * 3)
        bytes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<n {
                    let a = Int(src[i * 4 + 3])
                    let white = 255 * (255 - a) + 128
                    for c in 0..<3 {
                        let t = Int(src[i * 4 + c]) * a + white
                        dst[i * 3 + c] = UInt8(truncatingIfNeeded: ((t >> 8) + t) >> 8)
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }
}

extension Data {
    /// Lowercase hex of the first `count` bytes, for error messages.
    func hexPrefix(_ count: Int = 8) -> String {
        prefix(count).map { String(format: "%02x", $0) }.joined(separator: " ")
    }
}
