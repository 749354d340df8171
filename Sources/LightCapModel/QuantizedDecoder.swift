// The vocabulary product of greedy decoding, fast and still exact where it matters.
//
// logits = x W^T + b with W the [V, D] word embeddings (30522 x 312 at base size: 38 MB in F32)
// is memory-bound at one or two rows. This decoder keeps W packed once as INT8 (one scale per
// row, 9.5 MB) and runs oneDNN's s8s8s32 GEMM on the input quantised per row (8-bit levels).
// The int32 result must be the exact integer product. With VNNI (AVX-512 VNNI, AVX-VNNI) oneDNN
// adds four u8 x s8 products straight into int32 and the weights use 8-bit levels. Without it
// (AVX2, AVX-512 without VNNI) oneDNN shifts the input to u8 (x + 128) and multiplies with
// `vpmaddubsw`, which adds two u8 x s8 products into a saturating int16: the weights then use
// 7-bit levels (+-63), each pair at most 2 x 255 x 63 = 32130 < 32767. QuantizedDecoderTests
// checks the exactness on worst-case rows; the test script runs it again under
// DNNL_MAX_CPU_ISA=AVX2, so both kinds of kernel are checked on a VNNI host. Without VNNI that
// GEMM is slow, though, so there the approximate logits come from LightCap's weight-only kernel
// (`Int8Linear`: the same 8-bit rows widened to F32, the input unrounded, 9.5 MB a step), whose
// bound is ||x|| ||w - w~|| plus its F32 rounding, (D + 4) u ||x|| ||w~||. Every approximate
// logit comes with a rigorous bound on its error,
//     |x.w - x~.w~| <= ||x - x~|| ||w|| + ||x~|| ||w - w~||   (Cauchy-Schwarz),
// so every token whose logit could still be the largest (upper bound >= the best lower bound)
// is recomputed exactly in F32 from the original rows. The argmax is therefore the exact one;
// the other logits stay approximate (within their bound), which only touches the log-softmax
// normaliser (error ~1e-5 on random weights, far less when the distribution is peaked). Beam
// search asks for the k largest (`exactTop`): the threshold is then the lowest lower bound of
// the k largest approximate logits, and the k largest of the result are the exact ones.
// Reference twin: the F32 product (`PredictionHeads.logits`), compared in the tests.

import CDNNL
import LightCapCore

/// INT8 packed decoder with exact rescoring of the candidates for the argmax.
public final class QuantizedDecoder: @unchecked Sendable {
    /// Vocabulary size V and width D.
    public let rows: Int, width: Int
    let quantized: UnsafeMutablePointer<Int8>  // [V, D]
    let scales: [Float]  // per row
    let rowNorms: [Float]  // ||w_v||
    let errorNorms: [Float]  // ||w_v - w~_v||
    let exact: Tensor  // [V, D] F32
    let bias: [Float]  // [V]
    let maxRowNorm: Float, maxErrorNorm: Float
    /// Where oneDNN has no VNNI kernels its s8s8 GEMM is slow (5-6 ms at 1-2 rows by 30522 x
    /// 312 on an AVX2 EPYC, against 1.5 ms for the packed F32 product), so the approximate
    /// logits come from LightCap's weight-only kernel instead (`Int8Linear`: 127 levels per row,
    /// F32 inputs, a quarter of the F32 bytes), with its own rounding's error norms.
    let weightOnly: (linear: Int8Linear, errorNorms: [Float], maxErrorNorm: Float)?

    /// Whether oneDNN runs its VNNI int8 kernels here (`OneDNNInt8.hasVNNI`): the integer
    /// product's path; elsewhere the weight-only one.
    public static var hasVNNI: Bool { OneDNNInt8.hasVNNI }

    /// Largest level of the packed weights (`OneDNNInt8.weightLevels`) and of the quantised
    /// input (8 bits).
    static let weightLevels = OneDNNInt8.weightLevels, inputLevels = 127

    /// Packs `weight` [V, D] (kept for exact rescoring) with the added `bias` [V]; `weightOnly`:
    /// the approximate logits by `Int8Linear` (the default where oneDNN has no VNNI kernels).
    public init(weight: Tensor, bias: [Float], weightOnly useWeightOnly: Bool = !OneDNNInt8.hasVNNI) {
        precondition(weight.rank == 2 && bias.count == weight.shape[0], "QuantizedDecoder: weight \(weight.shape), bias \(bias.count)")
        let (v, d) = (weight.shape[0], weight.shape[1])
        rows = v
        width = d
        let quantized = UnsafeMutablePointer<Int8>.allocate(capacity: max(v * d, 1))
        let packed = weight.withUnsafeBufferPointer {
            RowQuantization($0, width: d, levels: QuantizedDecoder.weightLevels,
                            into: UnsafeMutableBufferPointer(start: quantized, count: v * d))
        }
        self.quantized = quantized
        scales = packed.scales
        rowNorms = packed.norms
        errorNorms = packed.errorNorms
        self.exact = weight
        self.bias = bias
        maxRowNorm = rowNorms.max() ?? 0
        maxErrorNorm = errorNorms.max() ?? 0
        if useWeightOnly {
            let linear = Int8Linear(try! Linear(weight: weight, bias: Tensor(shape: [v], scalars: bias)))  // shapes checked above
            weightOnly = (linear, linear.errorNorms, linear.errorNorms.max() ?? 0)
        } else {
            weightOnly = nil
        }
    }

    deinit { quantized.deallocate() }

    /// Logits of each row of x [M, D]: exact (F32, Double-accumulated) for every token that could
    /// be among the row's `exactTop` largest (1: its argmax), within the stated bound elsewhere.
    /// Returns M rows of V logits; the `exactTop` largest of each are the exact row's, exactly.
    public func logits(_ x: Tensor, exactTop: Int = 1) -> [[Float]] {
        precondition(exactTop >= 1, "QuantizedDecoder: exactTop \(exactTop)")
        let (m, d, v) = (x.shape[0], width, rows)
        precondition(x.shape == [m, d], "QuantizedDecoder: input \(x.shape) is not [M, \(d)]")
        // Per row, the error bound of each approximate logit j is
        //   a * ||w_j|| + b * e_j + c * (||w_j|| + e_j) + 1e-5 (1 + |logit|),
        // e_j = ||w_j - w~_j||: with the integer product a = ||x - x~||, b = ||x~||, c = 0
        // (Cauchy-Schwarz); with the weight-only one a = 0, b = ||x||, and c = (D + 4) u ||x|| for
        // the kernel's F32 rounding (u = 2^-24, Int8Linear's bound).
        var terms: [(a: Float, b: Float, c: Float)] = []
        let approximateRow: (Int) -> [Float]
        if let weightOnly {
            var approximate = [Float](repeating: 0, count: m * v)
            x.withUnsafeBufferPointer { xp in
                approximate.withUnsafeMutableBufferPointer { weightOnly.linear.apply(xp.baseAddress!, rows: m, into: $0.baseAddress!) }
                for r in 0..<m {
                    var sum = 0.0
                    for t in 0..<d { sum += Double(xp[r * d + t]) * Double(xp[r * d + t]) }
                    let norm = Float(sum.squareRoot())
                    terms.append((0, norm, Float(d + 4) * 0x1p-24 * norm))
                }
            }
            approximateRow = { r in Array(approximate[(r * v)..<((r + 1) * v)]) }
        } else {
            var xq = [Int8](repeating: 0, count: m * d)
            let input = x.withUnsafeBufferPointer { p in
                xq.withUnsafeMutableBufferPointer { RowQuantization(p, width: d, levels: QuantizedDecoder.inputLevels, into: $0) }
            }
            let acc = integerProduct(xq, rows: m)
            approximateRow = { [self] r in dequantizedRow(acc, row: r, inputScale: input.scales[r]) }
            terms = (0..<m).map { (input.errorNorms[$0], input.quantizedNorms[$0], 0) }
        }
        let (errorNorms, maxErrorNorm) = weightOnly.map { ($0.errorNorms, $0.maxErrorNorm) } ?? (self.errorNorms, self.maxErrorNorm)
        var out: [[Float]] = []
        out.reserveCapacity(m)
        x.withUnsafeBufferPointer { xp in
            exact.withUnsafeBufferPointer { w in
                for r in 0..<m {
                    let (ex, nq, rc) = terms[r]
                    var logits = approximateRow(r)
                    let low = logits.withUnsafeBufferPointer(Self.minimum)
                    func bound(_ j: Int, _ l: Float) -> Float {
                        // The bound above + slack for the Float rounding of both sides.
                        ex * rowNorms[j] + nq * errorNorms[j] + rc * (rowNorms[j] + errorNorms[j]) + 1e-5 * (1 + abs(l))
                    }
                    // The lowest lower bound among the `exactTop` largest approximate logits: at
                    // least that many exact logits reach it, so the exact top `exactTop` all do.
                    let top = logits.withUnsafeBufferPointer { FastMath.firstIndexOfMax($0) }
                    var threshold = logits[top] - bound(top, logits[top])
                    if exactTop > 1 {
                        for j in Self.largest(exactTop, of: logits) { threshold = min(threshold, logits[j] - bound(j, logits[j])) }
                    }
                    // Pass 2: every token whose upper bound reaches the threshold is recomputed
                    // exactly; `loose` >= every row's bound, a cheap first filter (16 lanes at a
                    // time: a block none of whose values passes it is skipped whole).
                    let loose = ex * maxRowNorm + nq * maxErrorNorm + rc * (maxRowNorm + maxErrorNorm)
                        + 1e-5 * (1 + max(abs(logits[top]), abs(low)))
                    let row = xp.baseAddress! + r * d
                    logits.withUnsafeMutableBufferPointer { lp in
                        let raw = UnsafeRawPointer(lp.baseAddress!)
                        var j = 0
                        while j < v {
                            let end = min(j + 16, v)
                            if end - j == 16,
                               !any(raw.loadUnaligned(fromByteOffset: j * MemoryLayout<Float>.stride, as: SIMD16<Float>.self) + loose .>= threshold) {
                                j = end
                                continue
                            }
                            for k in j..<end where lp[k] + loose >= threshold && lp[k] + bound(k, lp[k]) >= threshold {
                                let wr = w.baseAddress! + k * d
                                var dot = 0.0
                                for t in 0..<d { dot += Double(row[t]) * Double(wr[t]) }
                                lp[k] = Float(dot + Double(bias[k]))
                            }
                            j = end
                        }
                    }
                    out.append(logits)
                }
            }
        }
        return out
    }

    /// Row `r` of the approximate logits from the integer products `acc` [M, V]:
    /// q * (s_x * s_w[j]) + b[j] (16 lanes at a time; the same operations per value as the
    /// scalar tail).
    func dequantizedRow(_ acc: [Int32], row r: Int, inputScale s: Float) -> [Float] {
        let v = rows
        return [Float](unsafeUninitializedCapacity: v) { buffer, n in
            acc.withUnsafeBufferPointer { c in
                scales.withUnsafeBufferPointer { sc in
                    bias.withUnsafeBufferPointer { b in
                        let (cr, scr, br) = (UnsafeRawPointer(c.baseAddress! + r * v),
                                             UnsafeRawPointer(sc.baseAddress!), UnsafeRawPointer(b.baseAddress!))
                        let out = UnsafeMutableRawPointer(buffer.baseAddress!)
                        var j = 0
                        while j + 16 <= v {
                            let o = j * MemoryLayout<Float>.stride
                            let q = SIMD16<Float>(cr.loadUnaligned(fromByteOffset: o, as: SIMD16<Int32>.self))
                            let l = q * (s * scr.loadUnaligned(fromByteOffset: o, as: SIMD16<Float>.self))
                                + br.loadUnaligned(fromByteOffset: o, as: SIMD16<Float>.self)
                            out.storeBytes(of: l, toByteOffset: o, as: SIMD16<Float>.self)
                            j += 16
                        }
                        while j < v {
                            buffer[j] = Float(c[r * v + j]) * (s * sc[j]) + b[j]
                            j += 1
                        }
                    }
                }
            }
            n = v
        }
    }

    /// The smallest value of `p` (16 lanes at a time; +infinity when empty).
    static func minimum(_ p: UnsafeBufferPointer<Float>) -> Float {
        guard let base = p.baseAddress else { return .infinity }
        var minima = SIMD16<Float>(repeating: .infinity)
        let raw = UnsafeRawPointer(base)
        var j = 0
        while j + 16 <= p.count {
            let l = raw.loadUnaligned(fromByteOffset: j * MemoryLayout<Float>.stride, as: SIMD16<Float>.self)
            minima = minima.replacing(with: l, where: l .< minima)
            j += 16
        }
        var low = minima.min()
        while j < p.count { low = min(low, p[j]); j += 1 }
        return low
    }

    /// Indices of the `k` largest values of `row` (largest first; ties by lower index).
    static func largest(_ k: Int, of row: [Float]) -> [Int] {
        var top = TopCandidates(count: k)
        row.withUnsafeBufferPointer { top.offer(row: $0) }
        return top.items.map(\.flat)
    }

    /// The integer products of the quantised input rows `xq` [M, D] with every packed weight row,
    /// [M, V] row-major: one s8s8s32 product for all rows (the packed weights are read once).
    func integerProduct(_ xq: [Int8], rows m: Int) -> [Int32] {
        let (d, v) = (width, rows)
        precondition(xq.count == m * d, "QuantizedDecoder: \(xq.count) input levels for \(m) rows of \(d)")
        var acc = [Int32](unsafeUninitializedCapacity: m * v) { _, n in n = m * v }
        var zero: Int32 = 0
        let status = xq.withUnsafeBufferPointer { a in
            acc.withUnsafeMutableBufferPointer { c in
                dnnl_gemm_s8s8s32(CChar(UInt8(ascii: "N")), CChar(UInt8(ascii: "T")), CChar(UInt8(ascii: "F")),
                                  dnnl_dim_t(m), dnnl_dim_t(v), dnnl_dim_t(d), 1, a.baseAddress!, dnnl_dim_t(d), 0,
                                  quantized, dnnl_dim_t(d), 0, 0, c.baseAddress!, dnnl_dim_t(v), &zero)
            }
        }
        precondition(status == dnnl_success, "oneDNN gemm_s8s8s32 failed (status \(status.rawValue))")
        return acc
    }
}
