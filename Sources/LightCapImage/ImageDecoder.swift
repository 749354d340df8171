// The one entry point for pixels: sniff the format from the bytes, check the limits, decode,
// composite alpha on white, apply EXIF orientation.
import Foundation
import LightCapFiles

/// Decodes JPEG, PNG and WebP data into an opaque `RGBImage`.
///
/// The format is recognised from the bytes, never from a file name. Images with an alpha channel
/// (PNG RGBA / gray+alpha / tRNS, WebP with alpha) are composited on white. EXIF orientation
/// (JPEG APP1, PNG eXIf, WebP EXIF) is applied, so the result is upright as Pillow's
/// `ImageOps.exif_transpose` would leave it.
public enum ImageDecoder {
    /// Decodes `data`.
    /// - Parameters:
    ///   - limits: checked against the header before any pixel buffer is allocated.
    ///   - minimumSide: the model's input size: a JPEG at least twice as large is decoded at a
    ///     reduced DCT scale (1/2, 1/4, 1/8) by Pillow's draft rule (`JPEGScale.choose`), whose
    ///     shorter side stays >= this; nil decodes at full size. Ignored by PNG and WebP.
    /// - Throws: `ImageError`.
    public static func decode(_ data: Data, limits: ImageLimits = .init(), minimumSide: Int? = nil) throws -> RGBImage {
        guard !data.isEmpty else { throw ImageError.empty }
        guard let format = ImageFormat.sniff(data) else {
            throw ImageError.unrecognizedFormat(prefix: data.hexPrefix())
        }
        switch format {
        case .jpeg:
            let raw = try JPEGDecoder.decode(data, limits: limits, minimumSide: minimumSide)
            let orientation = data.withUnsafeBytes { EXIFOrientation.fromJPEG($0.bindMemory(to: UInt8.self)) }
            return (orientation ?? .up).apply(to: raw.compositedOnWhite())
        case .png:
            try PNGDecoder.checkClaimedSize(data, limits: limits)
            let (raw, orientation) = try PNGFastPath.decode(data, limits: limits)
                ?? PNGDecoder.decode(data, limits: limits)
            return (orientation ?? .up).apply(to: raw.compositedOnWhite())
        case .webp:
            let (raw, orientation) = try WebPDecoder.decode(data, limits: limits)
            return (orientation ?? .up).apply(to: raw.compositedOnWhite())
        }
    }

    /// Reads the file at `url` and decodes it (see `decode(_:limits:minimumSide:)`).
    public static func decode(contentsOf url: URL, limits: ImageLimits = .init(), minimumSide: Int? = nil) throws -> RGBImage {
        let data: Data
        do {
            data = try FileContents.read(url, options: .mappedIfSafe)
        } catch {
            throw ImageError.unreadable(path: url.path, detail: error.localizedDescription)
        }
        return try decode(data, limits: limits, minimumSide: minimumSide)
    }

    /// Decodes a JPEG at an explicit DCT scale (no EXIF orientation): for parity tests against
    /// Pillow's `draft()`, which offers 1/2, 1/4 and 1/8.
    public static func decodeJPEG(_ data: Data, scale: JPEGScale, limits: ImageLimits = .init()) throws -> RGBImage {
        guard !data.isEmpty else { throw ImageError.empty }
        guard ImageFormat.sniff(data) == .jpeg else { throw ImageError.unrecognizedFormat(prefix: data.hexPrefix()) }
        return try JPEGDecoder.decode(data, limits: limits, minimumSide: nil, scale: scale).compositedOnWhite()
    }
}
