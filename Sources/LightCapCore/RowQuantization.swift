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
            var m: Float = 0
            for k in 0..<width { m = max(m, abs(row[k])) }
            let scale = m > 0 ? m / limit : 1
            var norm = 0.0, error = 0.0, quantizedNorm = 0.0
            for k in 0..<width {
                let level = max(-limit, min(limit, (row[k] / scale).rounded()))
                out[k] = Int8(level)
                let back = Double(level) * Double(scale)
                norm += Double(row[k]) * Double(row[k])
                error += (Double(row[k]) - back) * (Double(row[k]) - back)
                quantizedNorm += back * back
            }
            scales[r] = scale
            norms[r] = Float(norm.squareRoot())
            errorNorms[r] = Float(error.squareRoot())
            quantizedNorms[r] = Float(quantizedNorm.squareRoot())
        }
    }
}
