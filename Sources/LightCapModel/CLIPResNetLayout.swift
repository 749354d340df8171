// CLIPResNetLayout: the convolutions of CLIP's ModifiedResNet trunk, named as the weights file
// names them (docs/FORMAT.md), in order. The one description of the layout: the engine, its
// reference twin, the random-weight writers of the tests and benchmarks all walk it.

import LightCapCore

/// The trunk of a `Configuration.Visual`: a stem of three 3x3 convolutions, then bottleneck blocks.
public struct CLIPResNetLayout: Sendable {
    /// One convolution (+ BatchNorm) of the trunk.
    public struct Convolution: Sendable {
        /// The weight's name under `visual.` ("layer1.0.conv2"); the tensor is `<name>.weight`.
        public let name: String
        /// Its BatchNorm's name ("layer1.0.bn2"), whose tensors unfolded files carry.
        public let batchNorm: String
        public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int

        /// Whether an INT8 trunk holds it in INT8: every convolution but the stem's first, which
        /// reads the normalised (signed) pixels; the others read a ReLU's output or its average
        /// pool (>= 0), which u8 holds.
        public var quantizable: Bool { name != "conv1" }
    }

    /// x -> conv1 (1x1) -> conv2 (3x3) -> AvgPool(stride) -> conv3 (1x1) + identity -> ReLU, where
    /// identity = downsample (AvgPool(stride), 1x1 conv, BN) when stride > 1 or channels change.
    public struct Block: Sendable {
        /// "layer1.0".
        public let name: String
        public let conv1: Convolution, conv2: Convolution, conv3: Convolution
        public let downsample: Convolution?
        /// The block's average-pool stride (1 or 2).
        public let stride: Int
    }

    /// conv1 (stride 2), conv2, conv3; then AvgPool 2.
    public let stem: [Convolution]
    /// layer1..4: planes width * (1, 2, 4, 8), strides (1, 2, 2, 2).
    public let blocks: [Block]

    /// Every convolution, in file order.
    public var convolutions: [Convolution] {
        stem + blocks.flatMap { [$0.conv1, $0.conv2, $0.conv3] + ($0.downsample.map { [$0] } ?? []) }
    }

    public init(_ visual: Configuration.Visual) {
        func conv(_ name: String, _ bn: String, _ i: Int, _ o: Int, _ k: Int, stride: Int = 1) -> Convolution {
            Convolution(name: name, batchNorm: bn, inChannels: i, outChannels: o, kernel: k, stride: stride, padding: k / 2)
        }
        let w = visual.width
        stem = [conv("conv1", "bn1", 3, w / 2, 3, stride: 2), conv("conv2", "bn2", w / 2, w / 2, 3),
                conv("conv3", "bn3", w / 2, w, 3)]
        var blocks: [Block] = []
        var inplanes = w
        for (l, count) in visual.layers.enumerated() {
            let planes = w << l
            for i in 0..<count {
                let n = "layer\(l + 1).\(i)"
                let stride = (i == 0 && l > 0) ? 2 : 1
                blocks.append(Block(
                    name: n,
                    conv1: conv("\(n).conv1", "\(n).bn1", inplanes, planes, 1),
                    conv2: conv("\(n).conv2", "\(n).bn2", planes, planes, 3),
                    conv3: conv("\(n).conv3", "\(n).bn3", planes, planes * 4, 1),
                    downsample: stride > 1 || inplanes != planes * 4
                        ? conv("\(n).downsample.0", "\(n).downsample.1", inplanes, planes * 4, 1) : nil,
                    stride: stride))
                inplanes = planes * 4
            }
        }
        self.blocks = blocks
    }
}
