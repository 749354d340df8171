// Pillow's antialiased BICUBIC resize (Image.resize(size, BICUBIC), reducing_gap=None), reproduced
// to the bit: the same double-precision filter weights, the same fixed-point coefficients
// (22 fractional bits, rounded half away from zero), the same horizontal-then-vertical order with
// 8-bit rounding after each pass, a pass skipped when its axis keeps its size.
//
// `BicubicResampler.resize` is the fast path; it can compute just a window of the output (the centre
// crop), which gives the same bytes because every output pixel depends only on its own weights.
// `BicubicResampler.Reference` is the plain twin, written like Pillow's loops, for the tests.
import Foundation

/// Pillow-exact BICUBIC resampling of `RGBImage`s.
public enum BicubicResampler {
    /// Fractional bits of Pillow's 8-bit-per-channel coefficients (`PRECISION_BITS = 32 - 8 - 2`).
    static let precisionBits: Int32 = 22

    /// Pillow's bicubic kernel, a = -0.5, support 2.
    @inline(__always)
    static func bicubic(_ t: Double) -> Double {
        let x = t < 0 ? -t : t
        if x < 1 { return (1.5 * x - 2.5) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * -0.5 }
        return 0
    }

    /// The weights of one axis: for output index `i`, input `start[i] ..< start[i] + count[i]`
    /// with fixed-point weights `weights[i * ksize ..< i * ksize + count[i]]`.
    struct Axis {
        let ksize: Int
        let start: [Int]
        let count: [Int]
        let weights: [Int32]

        /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for box `[0, inSize]`.
        init(inSize: Int, outSize: Int) {
            let in0: Float = 0, in1 = Float(inSize)
            let scale = Double(in1 - in0) / Double(outSize)
            let filterscale = max(scale, 1.0)
            let support = 2.0 * filterscale
            let ksize = Int(support.rounded(.up)) * 2 + 1
            var start = [Int](repeating: 0, count: outSize)
            var count = [Int](repeating: 0, count: outSize)
            var weights = [Int32](repeating: 0, count: outSize * ksize)
            var k = [Double](repeating: 0, count: ksize)
            let ss = 1.0 / filterscale
            let one = Double(1 << precisionBits)
            for xx in 0..<outSize {
                let center = Double(in0) + (Double(xx) + 0.5) * scale
                var xmin = Int(center - support + 0.5)
                if xmin < 0 { xmin = 0 }
                var xmax = Int(center + support + 0.5)
                if xmax > inSize { xmax = inSize }
                xmax -= xmin
                var ww = 0.0
                for x in 0..<xmax {
                    let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                    k[x] = w
                    ww += w
                }
                for x in 0..<xmax {
                    if ww != 0 { k[x] /= ww }
                    let v = k[x]
                    weights[xx * ksize + x] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
                }
                start[xx] = xmin
                count[xx] = xmax
            }
            self.ksize = ksize
            self.start = start
            self.count = count
            self.weights = weights
        }
    }

    /// Pillow's `clip8`: `in >> 22` clamped to 0...255.
    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        let s = v >> precisionBits
        return s <= 0 ? 0 : (s >= 255 ? 255 : UInt8(truncatingIfNeeded: s))
    }

    /// Resizes `image` to `width x height` and returns the window `crop` of the result
    /// (the whole image when nil). Same bytes as Pillow's resize followed by `crop`.
    public static func resize(_ image: RGBImage, width: Int, height: Int,
                              crop: (x: Int, y: Int, width: Int, height: Int)? = nil) -> RGBImage {
        let c = crop ?? (0, 0, width, height)
        precondition(width > 0 && height > 0 && c.x >= 0 && c.y >= 0 && c.width > 0 && c.height > 0
                     && c.x + c.width <= width && c.y + c.height <= height, "resize: bad crop window")
        let needH = width != image.width
        let needV = height != image.height
        let vAxis = needV ? Axis(inSize: image.height, outSize: height) : nil
        // Source rows the kept output rows read.
        let rows: Range<Int>
        if let v = vAxis {
            rows = v.start[c.y] ..< (v.start[c.y + c.height - 1] + v.count[c.y + c.height - 1])
        } else {
            rows = c.y ..< (c.y + c.height)
        }
        // Horizontal pass over those rows, for the kept columns only (or a plain column crop).
        let mid: [UInt8]
        if needH {
            mid = horizontal(image, rows: rows, axis: Axis(inSize: image.width, outSize: width),
                             columns: c.x ..< (c.x + c.width))
        } else {
            mid = cropBytes(image.pixels, rowLength: image.width, rows: rows, columns: c.x ..< (c.x + c.width))
        }
        guard let v = vAxis else {
            return RGBImage(width: c.width, height: c.height, pixels: mid)
        }
        let out = vertical(mid, rowLength: c.width, axis: v, firstRow: rows.lowerBound,
                           outRows: c.y ..< (c.y + c.height))
        return RGBImage(width: c.width, height: c.height, pixels: out)
    }

    static func cropBytes(_ px: [UInt8], rowLength: Int, rows: Range<Int>, columns: Range<Int>) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(rows.count * columns.count * 3)
        for y in rows {
            let base = (y * rowLength + columns.lowerBound) * 3
            out.append(contentsOf: px[base ..< base + columns.count * 3])
        }
        return out
    }

    /// One horizontal pass: `rows.count` rows of `columns.count` pixels.
    static func horizontal(_ image: RGBImage, rows: Range<Int>, axis: Axis, columns: Range<Int>) -> [UInt8] {
        let outW = columns.count
        var out = [UInt8](repeating: 0, count: rows.count * outW * 3)
        let half: Int32 = 1 << (precisionBits - 1)
        let inRow = image.width * 3
        image.pixels.withUnsafeBufferPointer { srcBuf in
            axis.weights.withUnsafeBufferPointer { wBuf in
                out.withUnsafeMutableBufferPointer { dstBuf in
                    let src = srcBuf.baseAddress!, wts = wBuf.baseAddress!, dst = dstBuf.baseAddress!
                    for (r, y) in rows.enumerated() {
                        let row = src + y * inRow
                        let o = dst + r * outW * 3
                        for (j, xx) in columns.enumerated() {
                            let k = wts + xx * axis.ksize
                            var p = row + axis.start[xx] * 3
                            var s0 = half, s1 = half, s2 = half
                            for x in 0..<axis.count[xx] {
                                let w = k[x]
                                s0 &+= Int32(p[0]) &* w
                                s1 &+= Int32(p[1]) &* w
                                s2 &+= Int32(p[2]) &* w
                                p += 3
                            }
                            o[j * 3] = clip8(s0)
                            o[j * 3 + 1] = clip8(s1)
                            o[j * 3 + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return out
    }

    /// One vertical pass over `mid` (rows starting at source row `firstRow`), for `outRows`.
    static func vertical(_ mid: [UInt8], rowLength: Int, axis: Axis, firstRow: Int, outRows: Range<Int>) -> [UInt8] {
        let n = rowLength * 3
        var out = [UInt8](repeating: 0, count: outRows.count * n)
        var acc = [Int32](repeating: 0, count: n)
        let half: Int32 = 1 << (precisionBits - 1)
        mid.withUnsafeBufferPointer { srcBuf in
            axis.weights.withUnsafeBufferPointer { wBuf in
                out.withUnsafeMutableBufferPointer { dstBuf in
                    acc.withUnsafeMutableBufferPointer { accBuf in
                        let src = srcBuf.baseAddress!, a = accBuf.baseAddress!
                        for (r, yy) in outRows.enumerated() {
                            for i in 0..<n { a[i] = half }
                            let k = wBuf.baseAddress! + yy * axis.ksize
                            for y in 0..<axis.count[yy] {
                                let row = src + (axis.start[yy] - firstRow + y) * n
                                let w = k[y]
                                for i in 0..<n { a[i] &+= Int32(row[i]) &* w }
                            }
                            let o = dstBuf.baseAddress! + r * n
                            for i in 0..<n { o[i] = clip8(a[i]) }
                        }
                    }
                }
            }
        }
        return out
    }

    /// The plain twin: Pillow's `ImagingResampleInner` loop for loop, whole image, no windows.
    public enum Reference {
        /// Full-size Pillow BICUBIC resize.
        public static func resize(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
            let needH = width != image.width, needV = height != image.height
            let v = Axis(inSize: image.height, outSize: height)
            var cur = image
            var vStart = v.start
            if needH {
                let first = v.start[0], last = v.start[height - 1] + v.count[height - 1]
                vStart = v.start.map { $0 - first }
                let h = Axis(inSize: image.width, outSize: width)
                var px = [UInt8](repeating: 0, count: width * (last - first) * 3)
                for yy in 0..<(last - first) {
                    for xx in 0..<width {
                        for c in 0..<3 {
                            var ss: Int32 = 1 << (precisionBits - 1)
                            for x in 0..<h.count[xx] {
                                ss += Int32(cur.pixels[((yy + first) * cur.width + x + h.start[xx]) * 3 + c])
                                    * h.weights[xx * h.ksize + x]
                            }
                            px[(yy * width + xx) * 3 + c] = clip8(ss)
                        }
                    }
                }
                cur = RGBImage(width: width, height: last - first, pixels: px)
            }
            if needV {
                var px = [UInt8](repeating: 0, count: cur.width * height * 3)
                for yy in 0..<height {
                    for xx in 0..<cur.width {
                        for c in 0..<3 {
                            var ss: Int32 = 1 << (precisionBits - 1)
                            for y in 0..<v.count[yy] {
                                ss += Int32(cur.pixels[((y + vStart[yy]) * cur.width + xx) * 3 + c])
                                    * v.weights[yy * v.ksize + y]
                            }
                            px[(yy * cur.width + xx) * 3 + c] = clip8(ss)
                        }
                    }
                }
                cur = RGBImage(width: cur.width, height: height, pixels: px)
            }
            return cur
        }

        /// Pillow's `crop((x, y, x + width, y + height))` inside the image.
        public static func crop(_ image: RGBImage, x: Int, y: Int, width: Int, height: Int) -> RGBImage {
            var px = [UInt8]()
            for row in y..<(y + height) {
                for col in x..<(x + width) {
                    let i = (row * image.width + col) * 3
                    px += [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]]
                }
            }
            return RGBImage(width: width, height: height, pixels: px)
        }
    }
}
