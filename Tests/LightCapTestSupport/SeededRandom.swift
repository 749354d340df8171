// The one seeded random generator of the test targets (SplitMix64), so random test inputs are
// repeatable and every target draws them the same way.

import Foundation
import LightCapCore

/// SplitMix64: a small, fast, seeded generator for repeatable test inputs.
public struct SeededRandom: Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    public mutating func nextUniform() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// Uniform in [-scale, scale).
    public mutating func uniform(_ scale: Float = 1) -> Float { Float(nextUniform() * 2 - 1) * scale }

    /// Standard normal (Box-Muller).
    public mutating func nextGaussian() -> Double {
        let u = max(nextUniform(), 1e-300), v = nextUniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }

    /// A tensor of `shape` filled with `uniform(scale)` in row-major order.
    public mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        var t = Tensor(zeros: shape)
        t.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] = uniform(scale) } }
        return t
    }
}
