// Dense kernels of the fusion model and heads: Linear (oneDNN sgemm), LayerNorm, GELU (erf),
// softmax, a general matrix product and multi-head attention. Each has a plain twin in
// `Reference` (the test-only LightCapReference target) that the tests compare against.

import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fully connected layer `y[M, out] = x[M, in] W^T + b`, PyTorch's `nn.Linear`.
/// The weight is packed once at load into an owned, 64-byte aligned F32 buffer (the file's
/// pages are then released); every call is one oneDNN sgemm.
public struct Linear: RowLinear, Sendable {
    /// Input features.
    public let inFeatures: Int
    /// Output features.
    public let outFeatures: Int
    /// [out, in], owned.
    public let weight: Tensor
    /// [out] or nil.
    public let bias: Tensor?

    /// A layer from a [out, in] weight and optional [out] bias.
    public init(weight: Tensor, bias: Tensor?) throws {
        guard weight.rank == 2 else {
            throw LightCapError.invalidArgument(reason: "Linear weight must be [out, in], got \(weight.shape)")
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw LightCapError.invalidArgument(reason: "Linear bias \(bias.shape) does not match weight \(weight.shape)")
        }
        outFeatures = weight.shape[0]
        inFeatures = weight.shape[1]
        self.weight = weight.owned()
        self.bias = bias?.owned()
    }

    /// Loads `weight` [out, in] and (if `bias`) `bias` [out] from `store`, strict shapes.
    public init(_ store: WeightStore, inFeatures: Int, outFeatures: Int, bias: Bool = true) throws {
        let w = try store.take("weight", shape: [outFeatures, inFeatures])
        let b = bias ? try store.take("bias", shape: [outFeatures]) : nil
        try self.init(weight: w, bias: b)
        store.releasePages(of: "weight")
    }

    /// y = x W^T + b for `rows` rows: x is [rows, in], y is [rows, out] (both row-major).
    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        var beta: Float = 0
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for r in 0..<rows { (y + r * outFeatures).update(from: b.baseAddress!, count: outFeatures) }
            }
            beta = 1
        }
        weight.withUnsafeBufferPointer { w in
            DNNL.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, alpha: 1,
                       a: x, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures, beta: beta, c: y, ldc: outFeatures)
        }
    }
}

/// A fully connected layer run through a row-pointer kernel (`Linear`, `PackedLinear`).
public protocol RowLinear {
    /// Input features.
    var inFeatures: Int { get }
    /// Output features.
    var outFeatures: Int { get }
    /// y = x W^T + b for `rows` rows: x is [rows, in], y is [rows, out] (both row-major).
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>)
}

extension RowLinear {
    /// x [..., in] -> [..., out].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "\(Self.self): input \(x.shape) does not end with \(inFeatures)")
        let rows = x.count / max(inFeatures, 1)
        var y = Tensor(zeros: Array(x.shape.dropLast()) + [outFeatures])
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in apply(xp.baseAddress!, rows: rows, into: yp.baseAddress!) }
        }
        return y
    }
}

/// Layer normalisation over the last dimension, PyTorch's `nn.LayerNorm` (biased variance).
public struct LayerNorm: Sendable {
    /// Normalised size.
    public let size: Int
    /// Epsilon added to the variance.
    public let eps: Float
    /// [size], owned.
    public let weight: Tensor
    /// [size], owned.
    public let bias: Tensor

    /// A layer norm from its [size] weight and bias.
    public init(weight: Tensor, bias: Tensor, eps: Float) throws {
        guard weight.rank == 1, bias.shape == weight.shape else {
            throw LightCapError.invalidArgument(reason: "LayerNorm weight \(weight.shape) and bias \(bias.shape) must be equal 1-D shapes")
        }
        size = weight.shape[0]
        self.eps = eps
        self.weight = weight.owned()
        self.bias = bias.owned()
    }

    /// Loads `weight` and `bias` [size] from `store`.
    public init(_ store: WeightStore, size: Int, eps: Float) throws {
        try self.init(weight: try store.take("weight", shape: [size]), bias: try store.take("bias", shape: [size]), eps: eps)
    }

    /// Normalises `rows` rows of `size` in place.
    public func apply(inPlace x: UnsafeMutablePointer<Float>, rows: Int) {
        weight.withUnsafeBufferPointer { g in
            bias.withUnsafeBufferPointer { b in
                let n = Float(size)
                for r in 0..<rows {
                    let row = x + r * size
                    var sum: Float = 0
                    for i in 0..<size { sum += row[i] }
                    let mean = sum / n
                    var sq: Float = 0
                    for i in 0..<size { let d = row[i] - mean; sq += d * d }
                    let inv = 1 / (sq / n + eps).squareRoot()
                    for i in 0..<size { row[i] = (row[i] - mean) * inv * g[i] + b[i] }
                }
            }
        }
    }

    /// x [..., size] -> normalised copy.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == size, "LayerNorm: input \(x.shape) does not end with \(size)")
        var y = x
        y.withUnsafeMutableBufferPointer { apply(inPlace: $0.baseAddress!, rows: $0.count / max(size, 1)) }
        return y
    }
}

/// Element-wise and row-wise activations.
public enum Activations {
    /// GELU with erf (BERT's "gelu"): x/2 (1 + erf(x / sqrt 2)), in place.
    public static func gelu(inPlace x: UnsafeMutableBufferPointer<Float>) {
        let invSqrt2: Float = 0.70710678118654752
        for i in x.indices { let v = x[i]; x[i] = 0.5 * v * (1 + erff(v * invSqrt2)) }
    }

    /// GELU (erf) of a tensor.
    public static func gelu(_ x: Tensor) -> Tensor {
        var y = x
        y.withUnsafeMutableBufferPointer { gelu(inPlace: $0) }
        return y
    }

    /// ReLU in place.
    public static func relu(inPlace x: UnsafeMutableBufferPointer<Float>) {
        for i in x.indices where !(x[i] > 0) { x[i] = 0 }
    }

    /// Logistic sigmoid in place.
    public static func sigmoid(inPlace x: UnsafeMutableBufferPointer<Float>) {
        for i in x.indices { x[i] = 1 / (1 + expf(-x[i])) }
    }

    /// Softmax of each of `rows` rows of `width`, in place (max subtracted first).
    /// `-inf` entries get 0; a row of all `-inf` becomes all 0.
    public static func softmax(inPlace x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            let row = x + r * width
            var m = -Float.infinity
            for i in 0..<width { m = max(m, row[i]) }
            if m == -.infinity {
                for i in 0..<width { row[i] = 0 }
                continue
            }
            var sum: Float = 0
            for i in 0..<width { let e = expf(row[i] - m); row[i] = e; sum += e }
            let inv = 1 / sum
            for i in 0..<width { row[i] *= inv }
        }
    }

    /// Softmax over the last dimension.
    public static func softmax(_ x: Tensor) -> Tensor {
        var y = x
        let width = x.shape.last ?? 1
        y.withUnsafeMutableBufferPointer { softmax(inPlace: $0.baseAddress!, rows: $0.count / max(width, 1), width: width) }
        return y
    }

    /// log-softmax of one row (for decoding scores), in Double for stability.
    public static func logSoftmax(_ x: UnsafeBufferPointer<Float>) -> [Float] {
        var m = -Float.infinity
        for v in x { m = max(m, v) }
        var sum: Double = 0
        for v in x { sum += exp(Double(v - m)) }
        let lse = Double(m) + log(sum)
        return x.map { Float(Double($0) - lse) }
    }
}

/// General matrix products (oneDNN sgemm).
public enum Matmul {
    /// Row-major `C = alpha * op(A) op(B) + beta * C`; op(A) is [m, k], op(B) is [k, n];
    /// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored.
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        DNNL.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                   a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// a [m, k] x b [k, n] (or b^T when `transposeB`, b [n, k]) -> [m, n].
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "Matmul: rank-2 operands expected, got \(a.shape) and \(b.shape)")
        let (m, k) = (a.shape[0], a.shape[1])
        let n = transposeB ? b.shape[0] : b.shape[1]
        precondition((transposeB ? b.shape[1] : b.shape[0]) == k, "Matmul: \(a.shape) x \(b.shape) mismatch")
        var c = Tensor(zeros: [m, n])
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    gemm(transB: transposeB, m: m, n: n, k: k, a: ap.baseAddress!, lda: k,
                         b: bp.baseAddress!, ldb: transposeB ? k : n, c: cp.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }
}

/// Scaled dot-product multi-head attention on [T, heads * headDim] row-major projections.
public enum Attention {
    /// out[Tq, H*d] = concat_h softmax(q_h k_h^T / sqrt(d) + mask) v_h. Up to `fewQueries`
    /// query rows by LightCap's vector kernel (attention.h), else by two sgemm calls per head;
    /// both against `Reference.attention` in the tests (the kernel on each vector path).
    /// - Parameters:
    ///   - query: [tq, heads * d] (stride `queryStride` between rows, default heads * d)
    ///   - key, value: [tk, heads * d] (row strides `keyStride`, `valueStride`)
    ///   - mask: additive [tq, tk] (row stride tk) or nil
    ///   - scratch: at least tq * tk floats
    ///   - output: [tq, heads * d] (row stride `outputStride`)
    public static func multiHead(query: UnsafePointer<Float>, queryStride: Int? = nil,
                                 key: UnsafePointer<Float>, keyStride: Int? = nil,
                                 value: UnsafePointer<Float>, valueStride: Int? = nil,
                                 tq: Int, tk: Int, heads: Int, headDim: Int,
                                 mask: UnsafePointer<Float>?, scratch: UnsafeMutablePointer<Float>,
                                 output: UnsafeMutablePointer<Float>, outputStride: Int? = nil) {
        let width = heads * headDim
        let (qs, ks, vs, os) = (queryStride ?? width, keyStride ?? width, valueStride ?? width, outputStride ?? width)
        let scale = 1 / Float(headDim).squareRoot()
        if tq <= fewQueries {
            // Decoding's few query rows: two sgemm calls per head cost more in call overhead than
            // in arithmetic there; LightCap's vector kernel instead (attention.h).
            lightcap_attention_few(query, qs, key, ks, value, vs, tq, tk, heads, headDim, scale, mask, scratch, output, os)
            return
        }
        for h in 0..<heads {
            let off = h * headDim
            DNNL.sgemm(transA: false, transB: true, m: tq, n: tk, k: headDim, alpha: scale,
                       a: query + off, lda: qs, b: key + off, ldb: ks, beta: 0, c: scratch, ldc: tk)
            if let mask {
                for i in 0..<(tq * tk) { scratch[i] += mask[i] }
            }
            Activations.softmax(inPlace: scratch, rows: tq, width: tk)
            DNNL.sgemm(transA: false, transB: false, m: tq, n: headDim, k: tk, alpha: 1,
                       a: scratch, lda: tk, b: value + off, ldb: vs, beta: 0, c: output + off, ldc: os)
        }
    }

    /// `multiHead`'s vector path (at most `fewQueries` query rows) over keys and values held in two
    /// blocks, `first` then `then` (rows, each block's rows `headCount * headDim` apart), as if
    /// they were one block: the same bits (attention.h). A decoding step: the image rows that
    /// every hypothesis shares, then its own caption rows. `mask` [tq, tk] and `scratch` (tq * tk)
    /// span both blocks' tk rows.
    public static func fewQueries(query: UnsafePointer<Float>, queryStride: Int, tq: Int,
                                  first: (key: UnsafePointer<Float>, value: UnsafePointer<Float>, rows: Int),
                                  then: (key: UnsafePointer<Float>, value: UnsafePointer<Float>, rows: Int),
                                  heads: Int, headDim: Int, mask: UnsafePointer<Float>?,
                                  scratch: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
        precondition(tq <= fewQueries, "Attention.fewQueries: \(tq) query rows")
        let width = heads * headDim
        lightcap_attention_few_split(query, queryStride, first.key, first.value, first.rows, then.key, then.value, then.rows,
                                     width, width, tq, heads, headDim, 1 / Float(headDim).squareRoot(), mask, scratch,
                                     output, width)
    }

    /// Query rows up to which `multiHead` takes the direct vector path instead of sgemm.
    public static let fewQueries = 4

    /// Tensor form: q [tq, H*d], k and v [tk, H*d], mask [tq, tk] or nil -> [tq, H*d].
    public static func multiHead(query: Tensor, key: Tensor, value: Tensor, heads: Int, mask: Tensor?) -> Tensor {
        let (tq, width) = (query.shape[0], query.shape[1])
        let tk = key.shape[0]
        precondition(key.shape == [tk, width] && value.shape == [tk, width] && width % heads == 0,
                     "Attention: q \(query.shape), k \(key.shape), v \(value.shape), heads \(heads)")
        precondition(mask == nil || mask!.shape == [tq, tk], "Attention: mask must be [\(tq), \(tk)]")
        var out = Tensor(zeros: [tq, width])
        var scratch = [Float](repeating: 0, count: max(tq * tk, 1))
        query.withUnsafeBufferPointer { q in
            key.withUnsafeBufferPointer { k in
                value.withUnsafeBufferPointer { v in
                    out.withUnsafeMutableBufferPointer { o in
                        scratch.withUnsafeMutableBufferPointer { s in
                            if let mask {
                                mask.withUnsafeBufferPointer { m in
                                    multiHead(query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!, tq: tq, tk: tk,
                                              heads: heads, headDim: width / heads, mask: m.baseAddress!,
                                              scratch: s.baseAddress!, output: o.baseAddress!)
                                }
                            } else {
                                multiHead(query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!, tq: tq, tk: tk,
                                          heads: heads, headDim: width / heads, mask: nil,
                                          scratch: s.baseAddress!, output: o.baseAddress!)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}
