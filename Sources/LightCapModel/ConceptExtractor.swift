// Visual concept extractor (docs/FORMAT.md, computation 3-4): grid windows -> region features ->
// alignment MLP -> cosine against the stored CLIP text embeddings of the concept vocabulary ->
// top-k concepts, a concept's score being its best region.

import LightCapCore

/// The concepts kept for one image, best first.
public struct ConceptSelection: Sendable, Equatable {
    /// Row indices into `concepts.txt` / `concepts.embeddings`, by score descending.
    public var ids: [Int]
    /// Cosine score of each kept concept (best region).
    public var scores: [Float]

    public init(ids: [Int], scores: [Float]) {
        self.ids = ids
        self.scores = scores
    }
}

/// Finds the top-k concepts of a grid. Weights: `concepts.mlp.{0,2}.{weight,bias}`, `concepts.embeddings`.
public struct ConceptExtractor: Sendable {
    /// The concept vocabulary (lines of concepts.txt).
    public let names: [String]
    /// Window sizes (cells per side), in order.
    public let windows: [Int]
    /// Grid side G.
    public let gridSide: Int
    /// Concepts kept per image (capped by the vocabulary size).
    public let topK: Int
    let fc1: Linear  // [hidden, C]
    let fc2: Linear  // [E, hidden]
    /// L2-normalised concept embeddings [K, E], owned.
    let normalizedEmbeddings: Tensor

    /// Loads the extractor from the `concepts` scope.
    public init(_ store: WeightStore, configuration: Configuration, names: [String]) throws {
        let c = configuration.gridChannels, cc = configuration.concepts
        guard !names.isEmpty else {
            throw LightCapError.invalidConfiguration(reason: "concepts.txt is empty: the concept extractor needs concepts")
        }
        fc1 = try Linear(store.scoped("mlp").scoped(0), inFeatures: c, outFeatures: cc.hiddenDim)
        fc2 = try Linear(store.scoped("mlp").scoped(2), inFeatures: cc.hiddenDim, outFeatures: cc.embedDim)
        let embeddings = try store.take("embeddings", shape: [names.count, cc.embedDim])
        normalizedEmbeddings = Self.normalizedRows(embeddings)
        self.names = names
        windows = cc.windows
        gridSide = configuration.gridSide
        topK = min(cc.topK, names.count)
    }

    /// Number of regions: the sum of n*n over the windows.
    public var regionCount: Int { windows.reduce(0) { $0 + $1 * $1 } }

    /// Region features [R, C]: for each window n, PyTorch's `adaptive_avg_pool2d(grid, n)` cells
    /// in row-major order (cell i spans rows floor(i*G/n) ..< ceil((i+1)*G/n)).
    public func regions(_ grid: Tensor) -> Tensor {
        let g = gridSide, c = grid.shape[1]
        precondition(grid.shape == [g * g, c], "ConceptExtractor: grid \(grid.shape) is not [\(g * g), C]")
        var out = Tensor(zeros: [regionCount, c])
        grid.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                var r = 0
                for n in windows {
                    for cy in 0..<n {
                        let (y0, y1) = (cy * g / n, ((cy + 1) * g + n - 1) / n)
                        for cx in 0..<n {
                            let (x0, x1) = (cx * g / n, ((cx + 1) * g + n - 1) / n)
                            let row = dst.baseAddress! + r * c
                            for y in y0..<y1 {
                                for x in x0..<x1 {
                                    let cell = src.baseAddress! + (y * g + x) * c
                                    for k in 0..<c { row[k] += cell[k] }
                                }
                            }
                            let inv = 1 / Float((y1 - y0) * (x1 - x0))
                            for k in 0..<c { row[k] *= inv }
                            r += 1
                        }
                    }
                }
            }
        }
        return out
    }

    /// The alignment MLP: Linear, ReLU, Linear. [R, C] -> [R, E] (not normalised).
    public func regionEmbeddings(_ regions: Tensor) -> Tensor {
        var h = fc1(regions)
        h.withUnsafeMutableBufferPointer { Activations.relu(inPlace: $0) }
        return fc2(h)
    }

    /// Score of every concept [K]: the best cosine over the regions.
    public func scores(_ regionEmbeddings: Tensor) -> [Float] {
        let e = Self.normalizedRows(regionEmbeddings)  // [R, E]
        let cosine = Matmul.matmul(e, normalizedEmbeddings, transposeB: true)  // [R, K]
        let (r, k) = (cosine.shape[0], cosine.shape[1])
        return cosine.withUnsafeBufferPointer { p in
            (0..<k).map { j in
                var best = -Float.infinity
                for i in 0..<r { best = max(best, p[i * k + j]) }
                return best
            }
        }
    }

    /// The `topK` best concepts by score descending; equal scores keep the lower index first.
    public func select(_ scores: [Float]) -> ConceptSelection {
        let order = scores.indices.sorted { a, b in
            scores[a] != scores[b] ? scores[a] > scores[b] : a < b
        }
        let ids = Array(order.prefix(topK))
        return ConceptSelection(ids: ids, scores: ids.map { scores[$0] })
    }

    /// Grid [N, C] -> the kept concepts.
    public func callAsFunction(_ grid: Tensor) -> ConceptSelection {
        select(scores(regionEmbeddings(regions(grid))))
    }

    /// Rows divided by max(L2 norm, 1e-12), as `F.normalize`.
    static func normalizedRows(_ x: Tensor) -> Tensor {
        let width = x.shape.last ?? 1
        var out = x.owned()
        out.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / max(width, 1)) {
                let row = p.baseAddress! + r * width
                var sq: Float = 0
                for i in 0..<width { sq += row[i] * row[i] }
                let inv = 1 / max(sq.squareRoot(), 1e-12)
                for i in 0..<width { row[i] *= inv }
            }
        }
        return out
    }
}
