// CLIPResNetReference: the plain twin of CLIPResNet. Direct convolution loops in Double,
// explicit BatchNorm for unfolded files, the attention pool from Reference ops. Slow; tests only.

import LightCapCore
import LightCapModel

/// A slow, plain-Swift ModifiedResNet for checking `CLIPResNet`.
public struct CLIPResNetReference: Sendable {
    /// One convolution (+ BN when unfolded).
    struct ConvBN: Sendable {
        let weight: Tensor
        let bias: Tensor?
        let bn: (gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor)?
        let stride: Int
        let padding: Int

        func callAsFunction(_ x: Tensor) -> Tensor {
            var y = Reference.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
            if let bn { y = Reference.batchNorm(y, gamma: bn.gamma, beta: bn.beta, mean: bn.mean, variance: bn.variance) }
            return y
        }
    }

    struct Block: Sendable {
        let conv1: ConvBN, conv2: ConvBN, conv3: ConvBN
        let downsample: ConvBN?
        let stride: Int
    }

    let stem: [ConvBN]
    let blocks: [Block]
    let attnpool: (pos: Tensor, q: (Tensor, Tensor), k: (Tensor, Tensor), v: (Tensor, Tensor), c: (Tensor, Tensor), heads: Int)?

    /// Loads the `visual.` weights of `configuration` from `store` (its own scope tracking).
    public init(_ store: WeightStore, configuration: Configuration) throws {
        let v = configuration.visual
        let s = store.scoped("visual")
        func conv(_ c: CLIPResNetLayout.Convolution) throws -> ConvBN {
            let (o, i, k) = (c.outChannels, c.inChannels, c.kernel)
            let w = try s.take("\(c.name).weight", shape: [o, i, k, k])
            if v.batchnormFolded {
                return ConvBN(weight: w, bias: try s.take("\(c.name).bias", shape: [o]), bn: nil, stride: c.stride, padding: c.padding)
            }
            let b = s.scoped(c.batchNorm)
            return ConvBN(weight: w, bias: nil,
                          bn: (try b.take("weight", shape: [o]), try b.take("bias", shape: [o]),
                               try b.take("running_mean", shape: [o]), try b.take("running_var", shape: [o])),
                          stride: c.stride, padding: c.padding)
        }
        let layout = CLIPResNetLayout(v)
        stem = try layout.stem.map(conv)
        let blocks = try layout.blocks.map { block in
            Block(conv1: try conv(block.conv1), conv2: try conv(block.conv2), conv3: try conv(block.conv3),
                  downsample: try block.downsample.map(conv), stride: block.stride)
        }
        self.blocks = blocks
        if v.attentionPool {
            let a = s.scoped("attnpool")
            let c = configuration.gridChannels
            func lin(_ n: String, _ o: Int) throws -> (Tensor, Tensor) {
                (try a.scoped(n).take("weight", shape: [o, c]), try a.scoped(n).take("bias", shape: [o]))
            }
            attnpool = (try a.take("positional_embedding", shape: [configuration.visualTokens + 1, c]),
                        try lin("q_proj", c), try lin("k_proj", c), try lin("v_proj", c), try lin("c_proj", v.outputDim), v.heads)
        } else {
            attnpool = nil
        }
    }

    /// pixels [3, S, S] -> grid tokens [G*G, C].
    public func grid(_ pixels: Tensor) -> Tensor {
        var x = pixels
        for c in stem { x = Reference.relu(c(x)) }
        x = Reference.avgPool2d(x, kernel: 2)
        for b in blocks {
            var h = Reference.relu(b.conv1(x))
            h = Reference.relu(b.conv2(h))
            if b.stride > 1 { h = Reference.avgPool2d(h, kernel: b.stride) }
            h = b.conv3(h)
            var identity = x
            if let ds = b.downsample {
                identity = ds(b.stride > 1 ? Reference.avgPool2d(x, kernel: b.stride) : x)
            }
            x = Reference.relu(Reference.add(h, identity))
        }
        return Reference.tokens(x)
    }

    /// grid tokens [N, C] -> pooled [output_dim] (attention pool).
    public func pooled(_ grid: Tensor) -> Tensor? {
        guard let a = attnpool else { return nil }
        let (n, c) = (grid.shape[0], grid.shape[1])
        let g = grid.scalars, pos = a.pos.scalars
        var tokens = [Float](repeating: 0, count: (n + 1) * c)
        for j in 0..<c {
            var sum = 0.0
            for i in 0..<n { sum += Double(g[i * c + j]) }
            tokens[j] = Float(sum / Double(n)) + pos[j]
        }
        for i in 0..<(n * c) { tokens[c + i] = g[i] + pos[c + i] }
        let t = Tensor(shape: [n + 1, c], scalars: tokens)
        let q = Reference.linear(t.rows(0..<1), weight: a.q.0, bias: a.q.1)
        let k = Reference.linear(t, weight: a.k.0, bias: a.k.1)
        let v = Reference.linear(t, weight: a.v.0, bias: a.v.1)
        let o = Reference.attention(query: q, key: k, value: v, heads: a.heads, mask: nil)
        let out = Reference.linear(o, weight: a.c.0, bias: a.c.1)
        return out.reshaped([out.count])
    }
}
