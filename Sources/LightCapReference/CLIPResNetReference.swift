// CLIPResNetReference: the plain twin of CLIPResNet. Direct convolution loops in Double,
// explicit BatchNorm for unfolded files, the attention pool from Reference ops. Slow; tests only.

import LightCapCore

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
        func conv(_ name: String, _ bn: String, _ i: Int, _ o: Int, _ k: Int, stride: Int = 1, padding: Int = 0) throws -> ConvBN {
            let w = try s.take("\(name).weight", shape: [o, i, k, k])
            if v.batchnormFolded {
                return ConvBN(weight: w, bias: try s.take("\(name).bias", shape: [o]), bn: nil, stride: stride, padding: padding)
            }
            let b = s.scoped(bn)
            return ConvBN(weight: w, bias: nil,
                          bn: (try b.take("weight", shape: [o]), try b.take("bias", shape: [o]),
                               try b.take("running_mean", shape: [o]), try b.take("running_var", shape: [o])),
                          stride: stride, padding: padding)
        }
        let w = v.width
        stem = [try conv("conv1", "bn1", 3, w / 2, 3, stride: 2, padding: 1),
                try conv("conv2", "bn2", w / 2, w / 2, 3, padding: 1),
                try conv("conv3", "bn3", w / 2, w, 3, padding: 1)]
        var blocks: [Block] = []
        var inplanes = w
        for (l, count) in v.layers.enumerated() {
            let planes = w << l
            for i in 0..<count {
                let stride = (i == 0 && l > 0) ? 2 : 1
                let n = "layer\(l + 1).\(i)"
                let ds = (stride > 1 || inplanes != planes * 4)
                    ? try conv("\(n).downsample.0", "\(n).downsample.1", inplanes, planes * 4, 1) : nil
                blocks.append(Block(conv1: try conv("\(n).conv1", "\(n).bn1", inplanes, planes, 1),
                                    conv2: try conv("\(n).conv2", "\(n).bn2", planes, planes, 3, padding: 1),
                                    conv3: try conv("\(n).conv3", "\(n).bn3", planes, planes * 4, 1),
                                    downsample: ds, stride: stride))
                inplanes = planes * 4
            }
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
