// Branch-free exp and GELU for the fusion model's hot loops (libm's expf/erff are scalar calls;
// these loops vectorise), and the first argmax of a logit row in 16 lanes (the compiler keeps
// an index-tracking loop scalar). Reference twins: libm (`Activations.gelu`, `exp`) and the
// scalar loops, compared in Tests/LightCapModelTests/FastMathTests.swift.
//   exp(x), x <= 0: x = n ln2 + r (Cody-Waite), e^r by a degree-7 Taylor polynomial on
//                   |r| <= ln2/2 (truncation < 6e-9 relative), 2^n from the exponent bits;
//                   inputs below -87 are clamped (result ~1.6e-38 instead of 0). The SIMD16
//                   form runs the same operations lane by lane (the same values, bit for bit)
//                   for loops the compiler does not vectorise by itself (a reduction).
//   erf(x):         Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7; under 6e-7 after Float rounding).

/// Fast elementwise math (about 1e-7 relative / absolute error, see the file header).
public enum FastMath {
    /// e^x for x <= 0 (x below -87 is treated as -87).
    @inlinable @inline(__always)
    public static func expNonPositive(_ x: Float) -> Float {
        let x = max(x, -87)
        let k = x * 1.442695040888963 + 12582912  // 1.5 * 2^23: rounds to an integer in the low bits
        let n = k - 12582912
        let r = (x - n * 0.693145751953125) - n * 1.4286068203094172e-06
        var p: Float = 1.0 / 5040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // k's bit pattern is 0x4B400000 + n; (n + 127) << 23 is 2^n.
        return p * Float(bitPattern: (k.bitPattern &- 0x4B3F_FF81) &<< 23)
    }

    /// e^x for x <= 0 in 16 lanes at once, each lane equal to `expNonPositive(_: Float)`
    /// (-inf gives ~1.6e-38, as any input below -87). Written with lane-wise selects and bit
    /// casts, which the compiler keeps as vector instructions (`pointwiseMax` it does not).
    @inlinable @inline(__always)
    public static func expNonPositive(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let x = x.replacing(with: -87, where: x .< -87)
        let k = x * 1.442695040888963 + 12582912
        let n = k - 12582912
        let r = (x - n * 0.693145751953125) - n * 1.4286068203094172e-06
        var p = SIMD16<Float>(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let twoToN = (unsafeBitCast(k, to: SIMD16<Int32>.self) &- 0x4B3F_FF81) &<< 23
        return p * unsafeBitCast(twoToN, to: SIMD16<Float>.self)
    }

    /// The index of the first largest value of `x`, equal to the scalar loop
    /// `for j in x.indices where x[j] > x[best] { best = j }` on rows without NaN (0 for an empty
    /// row). Two passes of 16 lanes: the max by lane-wise selects, then the first index holding
    /// it (a 30522-logit row: about 0.01 ms against 0.05 ms for the scalar loop).
    public static func firstIndexOfMax(_ x: UnsafeBufferPointer<Float>) -> Int {
        guard x.count > 1 else { return 0 }
        let n = x.count
        let best = maximum(x)
        var i = 0
        while i + 16 <= n && !any(lanes(x, i) .== best) { i += 16 }
        while i < n {
            if x[i] == best { return i }
            i += 1
        }
        return 0  // every value -inf or NaN
    }

    /// The largest value of `x` (NaN ignored; -inf for an empty or all -inf/NaN row): the max of
    /// 16 lanes by lane-wise selects, then the tail.
    public static func maximum(_ x: UnsafeBufferPointer<Float>) -> Float {
        let n = x.count
        var i = 0
        var maxima = SIMD16<Float>(repeating: -.infinity)
        while i + 16 <= n {
            let v = lanes(x, i)
            maxima = maxima.replacing(with: v, where: v .> maxima)
            i += 16
        }
        var best = maxima.max()
        while i < n {
            if x[i] > best { best = x[i] }
            i += 1
        }
        return best
    }

    /// x[i ..< i + 16] as one vector (unaligned load; i + 16 <= x.count).
    @inlinable @inline(__always)
    public static func lanes(_ x: UnsafeBufferPointer<Float>, _ i: Int) -> SIMD16<Float> {
        UnsafeRawPointer(x.baseAddress!).loadUnaligned(fromByteOffset: i * MemoryLayout<Float>.stride, as: SIMD16<Float>.self)
    }

    /// erf(x) (A&S 7.1.26, |error| < 6e-7 in Float).
    @inlinable @inline(__always)
    public static func erf(_ x: Float) -> Float {
        let a = abs(x)
        let t = 1 / (1 + 0.3275911 * a)
        var p: Float = 1.061405429
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let y = 1 - p * t * expNonPositive(-a * a)
        return x < 0 ? -y : y
    }

    /// erf(x) in 16 lanes, each lane equal to `erf(_: Float)` (the same operations lane by lane).
    @inlinable @inline(__always)
    public static func erf(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let a = unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: SIMD16<Float>.self)
        let t = 1 / (1 + 0.3275911 * a)
        var p = SIMD16<Float>(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let y = 1 - p * t * expNonPositive(-a * a)
        return y.replacing(with: -y, where: x .< 0)
    }

    /// GELU with erf, x/2 (1 + erf(x / sqrt 2)), in place: 16 lanes at a time, then the tail
    /// one by one (`geluScalar`, the plain twin: the same values, bit for bit).
    @inlinable
    public static func gelu(inPlace x: UnsafeMutableBufferPointer<Float>) {
        let n = x.count
        var i = 0
        if let base = x.baseAddress {
            let raw = UnsafeMutableRawPointer(base)
            while i + 16 <= n {
                let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                raw.storeBytes(of: 0.5 * v * (1 + erf(v * 0.70710678118654752)), toByteOffset: i * 4, as: SIMD16<Float>.self)
                i += 16
            }
        }
        geluScalar(inPlace: UnsafeMutableBufferPointer(rebasing: x[i...]))
    }

    /// GELU one value at a time (the tail of `gelu(inPlace:)`, and its twin in the tests).
    @inlinable
    public static func geluScalar(inPlace x: UnsafeMutableBufferPointer<Float>) {
        for i in x.indices {
            let v = x[i]
            x[i] = 0.5 * v * (1 + erf(v * 0.70710678118654752))
        }
    }
}
