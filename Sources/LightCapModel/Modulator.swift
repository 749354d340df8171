// Cross-modal modulator (docs/FORMAT.md, computation 5): each kept concept's word embedding goes
// through Linear -> ReLU -> Linear -> sigmoid, giving per-channel weights; the concepts' weights
// are averaged and multiply every grid token channel-wise.

import LightCapCore

/// Channel weights from concept word embeddings. Weights: `modulator.fc1` [m, D], `modulator.fc2` [C, m].
public struct Modulator: Sendable {
    let fc1: Linear
    let fc2: Linear

    /// Loads the modulator from the `modulator` scope.
    public init(_ store: WeightStore, configuration: Configuration) throws {
        let d = configuration.fusion.hiddenSize, m = configuration.modulator.hiddenDim
        fc1 = try Linear(store.scoped("fc1"), inFeatures: d, outFeatures: m)
        fc2 = try Linear(store.scoped("fc2"), inFeatures: m, outFeatures: configuration.gridChannels)
    }

    /// Grid channels C.
    public var channels: Int { fc2.outFeatures }

    /// Concept word embeddings [k, D] -> modulation [C] (mean over the concepts of the sigmoid weights).
    public func modulation(_ conceptEmbeddings: Tensor) -> [Float] {
        var h = fc1(conceptEmbeddings)  // [k, m]
        h.withUnsafeMutableBufferPointer { Activations.relu(inPlace: $0) }
        var w = fc2(h)  // [k, C]
        w.withUnsafeMutableBufferPointer { Activations.sigmoid(inPlace: $0) }
        let (k, c) = (w.shape[0], w.shape[1])
        var out = [Float](repeating: 0, count: c)
        w.withUnsafeBufferPointer { p in
            for i in 0..<k { for j in 0..<c { out[j] += p[i * c + j] } }
        }
        let inv = 1 / Float(max(k, 1))
        for j in 0..<c { out[j] *= inv }
        return out
    }

    /// grid [N, C] * modulation [C], per channel.
    public static func modulate(_ grid: Tensor, by modulation: [Float]) -> Tensor {
        let c = modulation.count
        precondition(grid.shape.last == c, "Modulator: grid \(grid.shape) does not have \(c) channels")
        var out = grid.owned()
        out.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / max(c, 1)) {
                for j in 0..<c { p[r * c + j] *= modulation[j] }
            }
        }
        return out
    }
}
