// Int8Linear: a fully connected layer whose weight is kept as INT8 levels, one scale per output
// row (RowQuantization, 127 levels), with F32 inputs and outputs: LightCap's C kernel
// (int8_linear.h) widens the levels to F32 as it reads them. It is for the fusion layers of a
// decoding step, 2 to 10 rows, where reading the weights is the whole cost: a quarter of the
// bytes of the F32 layer. Only the weights are rounded (each by at most half its row's scale,
// max|w_row| / 254); the activations stay F32. Its plain twin is the F32 layer over the rounded
// weights (`dequantized`: one sgemm), which computes the same sums in another order;
// Int8LinearTests compares the two, on each vector path (AVX-512, AVX2, generic).

import CKernels

/// `y[M, out] = x[M, in] (q s)^T + b` with INT8 levels q and per-row scales s. Read-only after
/// init; calls from several threads at once are safe.
public final class Int8Linear: RowLinear, @unchecked Sendable {
    public let inFeatures: Int, outFeatures: Int
    /// Per output row: the scale of its levels.
    public let scales: [Float]
    /// Per output row: ||w - q s||, the distance its rounding moved it (error bounds).
    public let errorNorms: [Float]
    /// [out] or nil.
    public let bias: Tensor?
    private let packed: UnsafeMutablePointer<Int8>
    private let packedBytes: Int

    /// Rounds `linear`'s weight to 127 levels per output row.
    public init(_ linear: Linear) {
        let (n, k) = (linear.outFeatures, linear.inFeatures)
        inFeatures = k
        outFeatures = n
        var levels = [Int8](repeating: 0, count: n * k)
        let quantization = linear.weight.withUnsafeBufferPointer { w in
            levels.withUnsafeMutableBufferPointer { RowQuantization(w, width: max(k, 1), levels: 127, into: $0) }
        }
        scales = quantization.scales
        errorNorms = quantization.errorNorms
        bias = linear.bias
        packedBytes = lightcap_int8_linear_packed_bytes(n, k)
        let packed = UnsafeMutablePointer<Int8>.allocate(capacity: max(packedBytes, 1))
        if n * k > 0 { levels.withUnsafeBufferPointer { lightcap_int8_linear_pack($0.baseAddress!, n, k, packed) } }
        self.packed = packed
    }

    deinit { packed.deallocate() }

    /// The kernel's vector path here: "avx512", "avx2+fma" or "generic" (LIGHTCAP_KERNEL_ISA
    /// = avx2 or generic caps it).
    public static var isa: String { String(cString: lightcap_int8_linear_isa()) }

    /// Bytes of weights read per call (the levels; scales and bias aside).
    public var weightBytes: Int { packedBytes }

    /// The F32 layer over the rounded weights q * s (read back from the panels, int8_linear.h's
    /// layout [out / 16][in][16]): the plain twin.
    public var dequantized: Linear {
        let (n, k) = (outFeatures, inFeatures)
        let weight = Tensor(shape: [n, k], generator: { i in
            let (o, c) = (i / k, i % k)
            return Float(packed[((o / 16) * k + c) * 16 + o % 16]) * scales[o]
        })
        return try! Linear(weight: weight, bias: bias)  // shapes are this layer's own
    }

    /// y = x (q s)^T + b for `rows` rows: x is [rows, in], y is [rows, out] (both row-major).
    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        guard rows > 0, outFeatures > 0 else { return }
        scales.withUnsafeBufferPointer { s in
            if let bias {
                bias.withUnsafeBufferPointer { b in
                    lightcap_int8_linear(x, rows, inFeatures, packed, s.baseAddress!, b.baseAddress!, outFeatures, y, Threads.current)
                }
            } else {
                lightcap_int8_linear(x, rows, inFeatures, packed, s.baseAddress!, nil, outFeatures, y, Threads.current)
            }
        }
    }
}
