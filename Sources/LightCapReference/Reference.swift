// Plain reference twins of every kernel: direct loops, Double accumulation, no oneDNN.
// Slow on purpose; tests compare the fast kernels with these.

import LightCapCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reference implementations (naive loops, Double accumulation).
public enum Reference {
    /// y[M, out] = x[M, in] W^T + b; W is [out, in].
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let (out, inF) = (weight.shape[0], weight.shape[1])
        let rows = x.count / inF
        let xs = x.scalars, w = weight.scalars, b = bias?.scalars
        var y = [Float](repeating: 0, count: rows * out)
        for r in 0..<rows {
            for o in 0..<out {
                var acc = Double(b?[o] ?? 0)
                for i in 0..<inF { acc += Double(xs[r * inF + i]) * Double(w[o * inF + i]) }
                y[r * out + o] = Float(acc)
            }
        }
        return Tensor(shape: Array(x.shape.dropLast()) + [out], scalars: y)
    }

    /// LayerNorm over the last dimension (biased variance).
    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let size = weight.count
        var xs = x.scalars
        let g = weight.scalars, b = bias.scalars
        for r in 0..<(xs.count / size) {
            var mean = 0.0
            for i in 0..<size { mean += Double(xs[r * size + i]) }
            mean /= Double(size)
            var variance = 0.0
            for i in 0..<size { let d = Double(xs[r * size + i]) - mean; variance += d * d }
            variance /= Double(size)
            let inv = 1 / (variance + Double(eps)).squareRoot()
            for i in 0..<size {
                xs[r * size + i] = Float((Double(xs[r * size + i]) - mean) * inv * Double(g[i]) + Double(b[i]))
            }
        }
        return Tensor(shape: x.shape, scalars: xs)
    }

    /// GELU with erf, in Double.
    public static func gelu(_ x: Tensor) -> Tensor {
        Tensor(shape: x.shape, scalars: x.scalars.map { v in
            let d = Double(v)
            return Float(0.5 * d * (1 + erf(d / 2.0.squareRoot())))
        })
    }

    /// Softmax over the last dimension, in Double.
    public static func softmax(_ x: Tensor) -> Tensor {
        let width = x.shape.last ?? 1
        var xs = x.scalars
        for r in 0..<(xs.count / width) {
            let row = (0..<width).map { Double(xs[r * width + $0]) }
            let m = row.max() ?? 0
            if m == -.infinity { for i in 0..<width { xs[r * width + i] = 0 }; continue }
            let e = row.map { exp($0 - m) }
            let s = e.reduce(0, +)
            for i in 0..<width { xs[r * width + i] = Float(e[i] / s) }
        }
        return Tensor(shape: x.shape, scalars: xs)
    }

    /// a [m, k] x b [k, n] (or b [n, k] transposed).
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool = false) -> Tensor {
        let (m, k) = (a.shape[0], a.shape[1])
        let n = transposeB ? b.shape[0] : b.shape[1]
        let av = a.scalars, bv = b.scalars
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var acc = 0.0
                for p in 0..<k {
                    acc += Double(av[i * k + p]) * Double(transposeB ? bv[j * k + p] : bv[p * n + j])
                }
                c[i * n + j] = Float(acc)
            }
        }
        return Tensor(shape: [m, n], scalars: c)
    }

    /// Multi-head scaled dot-product attention on [T, H*d] projections, additive mask [tq, tk].
    public static func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, mask: Tensor?) -> Tensor {
        let (tq, width) = (query.shape[0], query.shape[1])
        let tk = key.shape[0]
        let d = width / heads
        let q = query.scalars, k = key.scalars, v = value.scalars, mk = mask?.scalars
        var out = [Float](repeating: 0, count: tq * width)
        for h in 0..<heads {
            for i in 0..<tq {
                var scores = [Double](repeating: 0, count: tk)
                for j in 0..<tk {
                    var acc = 0.0
                    for p in 0..<d { acc += Double(q[i * width + h * d + p]) * Double(k[j * width + h * d + p]) }
                    scores[j] = acc / Double(d).squareRoot() + Double(mk?[i * tk + j] ?? 0)
                }
                let m = scores.max() ?? 0
                let e = scores.map { exp($0 - m) }
                let s = e.reduce(0, +)
                for p in 0..<d {
                    var acc = 0.0
                    for j in 0..<tk { acc += e[j] / s * Double(v[j * width + h * d + p]) }
                    out[i * width + h * d + p] = Float(acc)
                }
            }
        }
        return Tensor(shape: [tq, width], scalars: out)
    }

    /// 2-D convolution of x [C, H, W] with weight [O, C, k, k] (+ bias) -> [O, H', W'].
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let (o, k) = (weight.shape[0], weight.shape[2])
        let ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1
        let xs = x.scalars, ws = weight.scalars, bs = bias?.scalars
        var out = [Float](repeating: 0, count: o * ho * wo)
        for oc in 0..<o {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc = Double(bs?[oc] ?? 0)
                    for ic in 0..<c {
                        for ky in 0..<k {
                            let iy = oy * stride - padding + ky
                            if iy < 0 || iy >= h { continue }
                            for kx in 0..<k {
                                let ix = ox * stride - padding + kx
                                if ix < 0 || ix >= w { continue }
                                acc += Double(xs[(ic * h + iy) * w + ix]) * Double(ws[((oc * c + ic) * k + ky) * k + kx])
                            }
                        }
                    }
                    out[(oc * ho + oy) * wo + ox] = Float(acc)
                }
            }
        }
        return Tensor(shape: [o, ho, wo], scalars: out)
    }

    /// Average pool with window = stride = k (PyTorch `AvgPool2d(k)`, floor) on [C, H, W].
    public static func avgPool2d(_ x: Tensor, kernel k: Int) -> Tensor {
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let (ho, wo) = (h / k, w / k)
        let xs = x.scalars
        var out = [Float](repeating: 0, count: c * ho * wo)
        for ch in 0..<c {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc = 0.0
                    for dy in 0..<k { for dx in 0..<k { acc += Double(xs[(ch * h + oy * k + dy) * w + ox * k + dx]) } }
                    out[(ch * ho + oy) * wo + ox] = Float(acc / Double(k * k))
                }
            }
        }
        return Tensor(shape: [c, ho, wo], scalars: out)
    }

    /// Inference BatchNorm on [C, H, W]: (x - mean) / sqrt(var + eps) * gamma + beta.
    public static func batchNorm(_ x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor, eps: Double = 1e-5) -> Tensor {
        let c = x.shape[0], plane = x.count / c
        var xs = x.scalars
        let g = gamma.scalars, b = beta.scalars, m = mean.scalars, v = variance.scalars
        for ch in 0..<c {
            let inv = 1 / (Double(v[ch]) + eps).squareRoot()
            for i in 0..<plane {
                xs[ch * plane + i] = Float((Double(xs[ch * plane + i]) - Double(m[ch])) * inv * Double(g[ch]) + Double(b[ch]))
            }
        }
        return Tensor(shape: x.shape, scalars: xs)
    }

    /// Element-wise ReLU.
    public static func relu(_ x: Tensor) -> Tensor {
        Tensor(shape: x.shape, scalars: x.scalars.map { max($0, 0) })
    }

    /// Element-wise sum.
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "Reference.add: \(a.shape) vs \(b.shape)")
        return Tensor(shape: a.shape, scalars: zip(a.scalars, b.scalars).map { $0 + $1 })
    }

    /// [C, H, W] -> tokens [H * W, C] (row-major over y, x).
    public static func tokens(_ x: Tensor) -> Tensor {
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let xs = x.scalars
        var out = [Float](repeating: 0, count: x.count)
        for ch in 0..<c { for p in 0..<(h * w) { out[p * c + ch] = xs[ch * h * w + p] } }
        return Tensor(shape: [h * w, c], scalars: out)
    }
}
