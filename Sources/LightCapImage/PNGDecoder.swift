// PNG through libspng: 1/2/4/8/16-bit gray, RGB, palette, gray+alpha, RGBA, tRNS; no gamma
// correction (as Pillow). 16-bit samples keep their high byte, as Pillow's "RGB;16B" unpackers do.
import CSPNG
import Foundation

enum PNGDecoder {
    /// Largest ancillary chunk accepted, and the most cached metadata (bounds memory on hostile files).
    static let chunkLimit = 16 << 20

    static func decode(_ data: Data, limits: ImageLimits) throws -> (RawPixels, EXIFOrientation?) {
        guard let ctx = spng_ctx_new(0) else {
            throw ImageError.corrupt(format: .png, detail: "spng_ctx_new failed")
        }
        defer { spng_ctx_free(ctx) }
        let side = UInt32(clamping: min(limits.maxDimension, Int(Int32.max)))
        _ = spng_set_image_limits(ctx, side, side)
        _ = spng_set_chunk_limits(ctx, chunkLimit, chunkLimit)

        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            try check(spng_set_png_buffer(ctx, raw.baseAddress, raw.count))
            var ihdr = spng_ihdr()
            let rc = spng_get_ihdr(ctx, &ihdr)
            if rc == Int32(SPNG_EUSER_WIDTH.rawValue) || rc == Int32(SPNG_EUSER_HEIGHT.rawValue) {
                // The header names a side above maxDimension; report it without allocating.
                let (w, h) = headerSize(raw)
                throw ImageError.tooLarge(format: .png, width: w, height: h, limits: limits)
            }
            if rc == Int32(SPNG_EWIDTH.rawValue) || rc == Int32(SPNG_EHEIGHT.rawValue) {
                let (w, h) = headerSize(raw)
                throw ImageError.invalidDimensions(format: .png, width: w, height: h)
            }
            try check(rc)
            let width = Int(ihdr.width), height = Int(ihdr.height)
            try limits.check(width: width, height: height, format: .png)

            var trns = spng_trns()
            let hasTRNS = spng_get_trns(ctx, &trns) == 0
            let hasAlpha = ihdr.color_type == 4 || ihdr.color_type == 6 || hasTRNS
            let sixteen = ihdr.bit_depth == 16
            let fmt: spng_format = sixteen ? SPNG_FMT_RGBA16 : (hasAlpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8)
            var size = 0
            try check(spng_decoded_image_size(ctx, Int32(fmt.rawValue), &size))
            var buffer = [UInt8](repeating: 0, count: size)
            let flags = hasTRNS ? Int32(SPNG_DECODE_TRNS.rawValue) : 0
            try buffer.withUnsafeMutableBytes { out in
                try check(spng_decode_image(ctx, out.baseAddress, size, Int32(fmt.rawValue), flags))
            }
            var orientation: EXIFOrientation?
            var exif = spng_exif()
            if spng_get_exif(ctx, &exif) == 0, let p = exif.data, exif.length > 0 {
                let bytes = UnsafeRawBufferPointer(start: p, count: exif.length)
                var tiff = [UInt8](bytes)
                if tiff.starts(with: [0x45, 0x78, 0x69, 0x66, 0, 0]) { tiff.removeFirst(6) }
                orientation = EXIFOrientation.parse(tiff: tiff)
            }
            let pixels: RawPixels
            if sixteen {
                pixels = RawPixels(width: width, height: height, channels: hasAlpha ? 4 : 3,
                                   bytes: highBytes(buffer, count: width * height, keepAlpha: hasAlpha))
            } else {
                pixels = RawPixels(width: width, height: height, channels: hasAlpha ? 4 : 3, bytes: buffer)
            }
            return (pixels, orientation)
        }
    }

    /// Deflate's largest expansion: a 258-byte match coded in 2 bits.
    static let maxInflateRatio = 1032

    /// Rejects a PNG whose header claims more pixel data than the whole file could hold compressed,
    /// before either decoder allocates the pixel buffer: a 60-byte file claiming 9000x9000 RGBA
    /// would otherwise cost 324 MB (zeroed) before the missing data is noticed. Headers that are
    /// unreadable, invalid or over `limits` are left to the decoders, which name those errors.
    static func checkClaimedSize(_ data: Data, limits: ImageLimits) throws {
        guard data.count >= 33 else { return }
        let b = [UInt8](data.prefix(29))
        func be32(_ o: Int) -> Int { (0..<4).reduce(0) { $0 << 8 | Int(b[o + $1]) } }
        guard be32(8) == 13, b[12] == 0x49, b[13] == 0x48, b[14] == 0x44, b[15] == 0x52 else { return }
        let width = be32(16), height = be32(20), depth = Int(b[24])
        let channels: Int
        switch b[25] {
        case 0, 3: channels = 1
        case 2: channels = 3
        case 4: channels = 2
        case 6: channels = 4
        default: return
        }
        guard [1, 2, 4, 8, 16].contains(depth), (try? limits.check(width: width, height: height, format: .png)) != nil
        else { return }
        // Unfiltered bytes of every pass (Adam7 or not) are at least width x height x bits / 8.
        let (bits, overflow) = (width * height).multipliedReportingOverflow(by: channels * depth)
        let pixelBytes = overflow ? Int.max : bits / 8
        guard pixelBytes <= maxInflateRatio * data.count else {
            throw ImageError.truncated(format: .png, detail: "the header claims \(width)x\(height) pixels "
                + "(\(pixelBytes) bytes of pixel data), more than a \(data.count)-byte file can hold "
                + "(deflate expands at most \(maxInflateRatio):1)")
        }
    }

    /// Host-endian RGBA16 -> RGB8 or RGBA8 keeping each sample's high byte.
    static func highBytes(_ rgba16: [UInt8], count n: Int, keepAlpha: Bool) -> [UInt8] {
        let c = keepAlpha ? 4 : 3
        var out = [UInt8](repeating: 0, count: n * c)
        rgba16.withUnsafeBytes { raw in
            let s = raw.bindMemory(to: UInt16.self)
            for i in 0..<n {
                for k in 0..<c { out[i * c + k] = UInt8(truncatingIfNeeded: s[i * 4 + k] >> 8) }
            }
        }
        return out
    }

    /// Width and height as written in the IHDR (for messages about rejected headers).
    static func headerSize(_ raw: UnsafeRawBufferPointer) -> (Int, Int) {
        guard raw.count >= 24 else { return (0, 0) }
        func be32(_ o: Int) -> Int { (0..<4).reduce(0) { $0 << 8 | Int(raw[o + $1]) } }
        return (be32(16), be32(20))
    }

    /// Maps a libspng status to a typed error.
    static func check(_ rc: Int32) throws {
        guard rc != 0 else { return }
        let message = String(cString: spng_strerror(rc))
        switch rc {
        case Int32(SPNG_IO_EOF.rawValue), Int32(SPNG_EOF.rawValue), Int32(SPNG_EIDAT_TOO_SHORT.rawValue):
            throw ImageError.truncated(format: .png, detail: message)
        case Int32(SPNG_ECHUNK_LIMITS.rawValue):
            throw ImageError.unsupported(format: .png, detail: message)
        default:
            throw ImageError.corrupt(format: .png, detail: message)
        }
    }
}
