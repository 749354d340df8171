// The fast path for the PNGs photos come in (8-bit RGB or RGBA, not interlaced): chunks walked
// and CRC-checked here, IDAT inflated in one call by libdeflate, rows unfiltered in Swift.
// Anything else, and any anomaly at all, returns nil and libspng decodes the file (and names the
// error). Tests compare this path with libspng, its reference twin, byte for byte.
import CDeflate
import Foundation

enum PNGFastPath {
    /// Decodes `data` when it is a well-formed 8-bit RGB/RGBA non-interlaced PNG without tRNS;
    /// nil otherwise. Throws only the limit errors (before allocating).
    static func decode(_ data: Data, limits: ImageLimits) throws -> (RawPixels, EXIFOrientation?)? {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> (RawPixels, EXIFOrientation?)? in
            let b = raw.bindMemory(to: UInt8.self)
            func be32(_ o: Int) -> Int { Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]) }
            guard b.count >= 8 + 25 else { return nil }
            // IHDR must come first.
            guard be32(8) == 13, b[12] == 0x49, b[13] == 0x48, b[14] == 0x44, b[15] == 0x52 else { return nil }
            let width = be32(16), height = be32(20)
            let depth = b[24], colorType = b[25]
            guard depth == 8, colorType == 2 || colorType == 6, b[26] == 0, b[27] == 0, b[28] == 0,
                  width > 0, height > 0, width < 1 << 31, height < 1 << 31 else { return nil }
            try limits.check(width: width, height: height, format: .png)
            let bpp = colorType == 6 ? 4 : 3

            // Walk the chunks: verify every CRC, collect IDAT ranges, note eXIf, stop at IEND.
            var idat: [Range<Int>] = []
            var exif: Range<Int>?
            var p = 8
            var sawEnd = false
            while p + 12 <= b.count {
                let length = be32(p)
                guard length <= Int(Int32.max), p + 12 + length <= b.count else { return nil }
                let type = (b[p + 4], b[p + 5], b[p + 6], b[p + 7])
                let crc = libdeflate_crc32(0, b.baseAddress! + p + 4, length + 4)
                guard crc == UInt32(be32(p + 8 + length)) else { return nil }
                let body = (p + 8) ..< (p + 8 + length)
                switch type {
                case (0x49, 0x44, 0x41, 0x54):                                            // IDAT
                    // IDAT chunks must be consecutive.
                    if let last = idat.last, last.upperBound + 4 != p { return nil }
                    idat.append(body)
                case (0x49, 0x45, 0x4E, 0x44): sawEnd = true                              // IEND
                case (0x74, 0x52, 0x4E, 0x53): return nil                                 // tRNS
                case (0x65, 0x58, 0x49, 0x66): exif = body                                // eXIf
                case (0x49, 0x48, 0x44, 0x52): if p != 8 { return nil }                    // IHDR
                case (0x50, 0x4C, 0x54, 0x45): break                                      // PLTE (a hint here)
                default: if type.0 & 0x20 == 0 { return nil }                            // unknown critical
                }
                p += 12 + length
                if sawEnd { break }
            }
            guard sawEnd, !idat.isEmpty else { return nil }

            // Inflate all IDAT data in one call into the filtered rows.
            let rowBytes = width * bpp
            let expected = height * (rowBytes + 1)
            var filtered = [UInt8](unsafeUninitializedCapacity: expected) { _, n in n = expected }
            let compressed: [UInt8]
            if idat.count == 1 {
                compressed = []
            } else {
                compressed = idat.reduce(into: [UInt8]()) { $0.append(contentsOf: b[$1]) }
            }
            guard let inflater = libdeflate_alloc_decompressor() else { return nil }
            defer { libdeflate_free_decompressor(inflater) }
            var produced = 0
            let result = filtered.withUnsafeMutableBytes { out -> libdeflate_result in
                if idat.count == 1 {
                    return libdeflate_zlib_decompress(inflater, b.baseAddress! + idat[0].lowerBound, idat[0].count,
                                                      out.baseAddress, expected, &produced)
                }
                return compressed.withUnsafeBytes {
                    libdeflate_zlib_decompress(inflater, $0.baseAddress, $0.count, out.baseAddress, expected, &produced)
                }
            }
            guard result == LIBDEFLATE_SUCCESS, produced == expected else { return nil }

            var pixels = [UInt8](unsafeUninitializedCapacity: height * rowBytes) { _, n in n = height * rowBytes }
            let ok = filtered.withUnsafeBufferPointer { src in
                pixels.withUnsafeMutableBufferPointer { dst in
                    unfilter(src.baseAddress!, dst.baseAddress!, rows: height, rowBytes: rowBytes, bpp: bpp)
                }
            }
            guard ok else { return nil }
            let orientation = exif.flatMap { r -> EXIFOrientation? in
                var tiff = Array(b[r])
                if tiff.starts(with: [0x45, 0x78, 0x69, 0x66, 0, 0]) { tiff.removeFirst(6) }
                return EXIFOrientation.parse(tiff: tiff)
            }
            return (RawPixels(width: width, height: height, channels: bpp, bytes: pixels), orientation)
        }
    }

    /// Reverses the five PNG filters row by row; false on an unknown filter type.
    static func unfilter(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<UInt8>,
                         rows: Int, rowBytes: Int, bpp: Int) -> Bool {
        let zero = UnsafeMutablePointer<UInt8>.allocate(capacity: rowBytes)
        zero.initialize(repeating: 0, count: rowBytes)
        defer { zero.deallocate() }
        for y in 0..<rows {
            let f = src[y * (rowBytes + 1)]
            let s = src + y * (rowBytes + 1) + 1
            let d = dst + y * rowBytes
            let up = y == 0 ? UnsafePointer(zero) : UnsafePointer(dst + (y - 1) * rowBytes)
            switch f {
            case 0:
                d.update(from: s, count: rowBytes)
            case 1:
                for i in 0..<bpp { d[i] = s[i] }
                for i in bpp..<rowBytes { d[i] = s[i] &+ d[i - bpp] }
            case 2:
                for i in 0..<rowBytes { d[i] = s[i] &+ up[i] }
            case 3:
                for i in 0..<bpp { d[i] = s[i] &+ up[i] >> 1 }
                for i in bpp..<rowBytes {
                    d[i] = s[i] &+ UInt8(truncatingIfNeeded: (Int(d[i - bpp]) + Int(up[i])) >> 1)
                }
            case 4:
                if bpp == 3 { paethRow3(s, d, up, rowBytes) } else { paethRow4(s, d, up, rowBytes) }
            default:
                return false
            }
        }
        return true
    }

    /// A Paeth row of 3-byte pixels: one SIMD lane per channel, the left and up-left pixels in registers.
    static func paethRow3(_ s: UnsafePointer<UInt8>, _ d: UnsafeMutablePointer<UInt8>, _ up: UnsafePointer<UInt8>, _ n: Int) {
        var a = SIMD4<Int32>(), c = SIMD4<Int32>()
        var i = 0
        while i < n {
            let b = SIMD4<Int32>(Int32(up[i]), Int32(up[i + 1]), Int32(up[i + 2]), 0)
            let x = SIMD4<Int32>(Int32(s[i]), Int32(s[i + 1]), Int32(s[i + 2]), 0)
            a = (x &+ paeth(a, b, c)) & 0xFF
            d[i] = UInt8(truncatingIfNeeded: a[0])
            d[i + 1] = UInt8(truncatingIfNeeded: a[1])
            d[i + 2] = UInt8(truncatingIfNeeded: a[2])
            c = b
            i += 3
        }
    }

    /// A Paeth row of 4-byte pixels.
    static func paethRow4(_ s: UnsafePointer<UInt8>, _ d: UnsafeMutablePointer<UInt8>, _ up: UnsafePointer<UInt8>, _ n: Int) {
        var a = SIMD4<Int32>(), c = SIMD4<Int32>()
        var i = 0
        while i < n {
            let b = SIMD4<Int32>(Int32(up[i]), Int32(up[i + 1]), Int32(up[i + 2]), Int32(up[i + 3]))
            let x = SIMD4<Int32>(Int32(s[i]), Int32(s[i + 1]), Int32(s[i + 2]), Int32(s[i + 3]))
            a = (x &+ paeth(a, b, c)) & 0xFF
            d[i] = UInt8(truncatingIfNeeded: a[0])
            d[i + 1] = UInt8(truncatingIfNeeded: a[1])
            d[i + 2] = UInt8(truncatingIfNeeded: a[2])
            d[i + 3] = UInt8(truncatingIfNeeded: a[3])
            c = b
            i += 4
        }
    }

    /// The Paeth predictor on every lane.
    @inline(__always)
    static func paeth(_ a: SIMD4<Int32>, _ b: SIMD4<Int32>, _ c: SIMD4<Int32>) -> SIMD4<Int32> {
        let p = b &- c, q = a &- c, r = p &+ q
        let pa = p.replacing(with: 0 &- p, where: p .< 0)
        let pb = q.replacing(with: 0 &- q, where: q .< 0)
        let pc = r.replacing(with: 0 &- r, where: r .< 0)
        let bc = c.replacing(with: b, where: pb .<= pc)
        return bc.replacing(with: a, where: (pa .<= pb) .& (pa .<= pc))
    }
}
