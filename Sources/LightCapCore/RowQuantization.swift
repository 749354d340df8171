// Symmetric per-row INT8 quantisation: the one rule for the vocabulary decoder's packed weights
// and input (LightCapModel's QuantizedDecoder) and the weight-only INT8 layers (Int8Linear).
// Tested against its definition in RowQuantizationTests.

/// Symmetric per-row INT8 quantisation of a row-major [rows, width] matrix x, the one rule for
/// the packed weights and the decoder's input, with L = `levels` (at most 127):
/// scale = max|x_r| / L (1 for a zero row), q = round(x / scale) clamped to [-L, L],
/// x~ = q * scale. Keeps, per row, the norms that the error bound needs (accumulated in Double).
package struct RowQuantization {
    /// Per row: the scale, ||x_r||, ||x_r - x~_r|| and ||x~_r||.
    package var scales: [Float], norms: [Float], errorNorms: [Float], quantizedNorms: [Float]

    /// Quantises the rows of x (x.count / width of them) into `q` (as many Int8) on the levels
    /// -L...L, L = `levels`.
    package init(_ x: UnsafeBufferPointer<Float>, width: Int, levels: Int, into q: UnsafeMutableBufferPointer<Int8>) {
        precondition(width > 0 && x.count % width == 0 && q.count == x.count, "RowQuantization: \(x.count) values, width \(width), \(q.count) outputs")
        precondition((1...127).contains(levels), "RowQuantization: \(levels) levels")
        let limit = Float(levels)
        let rows = x.count / width
        scales = [Float](repeating: 1, count: rows)
        norms = [Float](repeating: 0, count: rows)
        errorNorms = [Float](repeating: 0, count: rows)
        quantizedNorms = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            let row = UnsafeBufferPointer(rebasing: x[(r * width)..<((r + 1) * width)])
            let out = UnsafeMutableBufferPointer(rebasing: q[(r * width)..<((r + 1) * width)])
            let m = Self.largestMagnitude(row)
            let scale = m > 0 ? m / limit : 1
            Self.levels(row, scale: scale, limit: limit, into: out)
            // The norms in Double, four running sums (independent chains, not one long one).
            var norm = SIMD4<Double>(), error = SIMD4<Double>(), quantizedNorm = SIMD4<Double>()
            var k = 0
            while k + 4 <= width {
                let v = SIMD4<Double>(Double(row[k]), Double(row[k + 1]), Double(row[k + 2]), Double(row[k + 3]))
                let back = SIMD4<Double>(Double(out[k]), Double(out[k + 1]), Double(out[k + 2]), Double(out[k + 3])) * Double(scale)
                norm += v * v
                error += (v - back) * (v - back)
                quantizedNorm += back * back
                k += 4
            }
            var (n, e, b) = (norm.sum(), error.sum(), quantizedNorm.sum())
            while k < width {
                let v = Double(row[k]), back = Double(out[k]) * Double(scale)
                n += v * v
                e += (v - back) * (v - back)
                b += back * back
                k += 1
            }
            scales[r] = scale
            norms[r] = Float(n.squareRoot())
            errorNorms[r] = Float(e.squareRoot())
            quantizedNorms[r] = Float(b.squareRoot())
        }
    }

    /// max |x_k| (0 for an empty row; NaN ignored, as `max(m, abs(x))` one by one ignores it):
    /// 16 lanes by lane-wise selects, then the tail.
    static func largestMagnitude(_ x: UnsafeBufferPointer<Float>) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        var k = 0
        if let base = x.baseAddress {
            let raw = UnsafeRawPointer(base)
            while k + 16 <= x.count {
                let v = raw.loadUnaligned(fromByteOffset: k * 4, as: SIMD16<Float>.self)
                let a = unsafeBitCast(unsafeBitCast(v, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: SIMD16<Float>.self)
                lanes.replace(with: a, where: a .> lanes)
                k += 16
            }
        }
        var m = lanes.max()
        while k < x.count {
            m = max(m, abs(x[k]))
            k += 1
        }
        return m
    }

    /// q_k = round(x_k / scale) clamped to [-limit, limit] (limit a whole number <= 127), as
    /// `Int8(max(-limit, min(limit, (x_k / scale).rounded())))` one by one (`level`, which the
    /// tail uses): 16 lanes at a time, the same operations lane by lane.
    static func levels(_ x: UnsafeBufferPointer<Float>, scale: Float, limit: Float, into q: UnsafeMutableBufferPointer<Int8>) {
        var k = 0
        if let base = x.baseAddress, let out = q.baseAddress {
            let raw = UnsafeRawPointer(base), outRaw = UnsafeMutableRawPointer(out)
            while k + 16 <= x.count {
                let v = raw.loadUnaligned(fromByteOffset: k * 4, as: SIMD16<Float>.self) / scale
                let w = SIMD16<Float>(repeating: limit).replacing(with: v, where: v .< limit)
                let c = SIMD16<Float>(repeating: -limit).replacing(with: w, where: w .>= -limit)
                let shifted = c + 12582912
                var r = shifted - 12582912
                let d = c - r
                r.replace(with: r + 1, where: (c .> 0) .& (d .== 0.5))
                r.replace(with: r - 1, where: (c .< 0) .& (d .== -0.5))
                // r is whole and |r| <= 127: r + 1.5 * 2^23 holds it in its low mantissa bits.
                let integers = unsafeBitCast(r + 12582912, to: SIMD16<Int32>.self) &- 0x4B40_0000
                outRaw.storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: integers), toByteOffset: k, as: SIMD16<Int8>.self)
                k += 16
            }
        }
        while k < x.count {
            q[k] = level(x[k] / scale, limit: limit)
            k += 1
        }
    }

    /// Int8(max(-limit, min(limit, v.rounded()))) (limit a whole number): rounding half away
    /// from zero commutes with clamping to whole bounds, so v is clamped first (a NaN becomes
    /// +limit either way), then rounded to nearest-even by adding and subtracting 1.5 * 2^23
    /// (exact for |c| <= 2^22) and moved one step away from zero where that rounded a tie
    /// toward zero. No libm call (`rounded()` is one per value): the loop vectorises.
    @inline(__always)
    static func level(_ v: Float, limit: Float) -> Int8 {
        let c = max(-limit, min(limit, v))
        let r = (c + 12582912) - 12582912
        let d = c - r
        return Int8(c > 0 && d == 0.5 ? r + 1 : (c < 0 && d == -0.5 ? r - 1 : r))
    }
}
