// ChannelLayout: the activation layouts LightCap's own kernels (CKernels) read and write
// directly, the ones oneDNN's convolutions give and take, so no reorders go between them.

import CKernels

/// How the channels of an activation are laid out in memory.
enum ChannelLayout: Sendable, CaseIterable {
    case nhwc, nChw8c, nChw16c

    var dnnl: DNNL.Layout {
        switch self {
        case .nhwc: return .nhwc
        case .nChw8c: return .nChw8c
        case .nChw16c: return .nChw16c
        }
    }

    /// Whether `channels` can be stored in this layout without padding.
    func fits(_ channels: Int) -> Bool {
        self == .nChw16c ? channels % 16 == 0 : channels % 8 == 0
    }

    /// Throws, naming `component`, unless `conv`'s input channels fit `src` and its output
    /// channels `dst`.
    static func check(_ src: ChannelLayout, _ dst: ChannelLayout, fit conv: Conv2d, for component: String) throws {
        guard src.fits(conv.inChannels), dst.fits(conv.outChannels) else {
            throw LightCapError.invalidArgument(reason: "\(component): \(conv.inChannels) -> \(conv.outChannels) channels do not fit \(src) -> \(dst)")
        }
    }

    /// The layout of `desc` (an activation of `shape`) among these, nhwc when it is none of them.
    init(_ desc: DNNL.MemoryDesc, _ shape: ConvolutionNetwork.Shape) throws {
        self = try Self.of(desc, shape) ?? .nhwc
    }

    /// The layout of `desc` (an activation of `shape`) if it is one of these, else nil.
    static func of(_ desc: DNNL.MemoryDesc, _ shape: ConvolutionNetwork.Shape) throws -> ChannelLayout? {
        try allCases.first {
            try $0.fits(shape.channels) && DNNL.equal(desc, DNNL.desc([1, shape.channels, shape.height, shape.width], $0.dnnl))
        }
    }

    /// The kernels' addressing of `channels` x `height` x `width` in this layout.
    func addressing(channels: Int, height: Int, width: Int) -> lightcap_channel_layout {
        switch self {
        case .nhwc: return lightcap_channel_layout(group: channels / 8, outer: 0, pixel: channels)
        case .nChw8c: return lightcap_channel_layout(group: 1, outer: height * width * 8, pixel: 8)
        case .nChw16c: return lightcap_channel_layout(group: 2, outer: height * width * 16, pixel: 16)
        }
    }
}
