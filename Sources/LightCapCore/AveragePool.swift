// AveragePool: LightCap's average pool (CKernels' average_pool.c), window = stride = k, on the
// layouts oneDNN's convolutions give and take. CLIP ResNet pools after its stem and in each
// stage's first block (both branches); oneDNN 2.6's AVX2 pooling took 1.2 ms of the RN50 trunk
// for these seven 2x2 pools, twice ONNX Runtime's time for the same pools.

import CKernels

/// One `AvgPool2d(kernel)` (PyTorch's: sides floored, taps summed row by row, divided by k * k).
final class AveragePool: Sendable {
    let channels: Int, height: Int, width: Int, kernel: Int
    let layout: ChannelLayout
    var outHeight: Int { height / kernel }
    var outWidth: Int { width / kernel }

    /// The input's channels must fit `layout` (the output takes the same layout).
    init(channels: Int, height: Int, width: Int, kernel: Int, layout: ChannelLayout) throws {
        guard layout.fits(channels) else {
            throw LightCapError.invalidArgument(reason: "average pool: \(channels) channels do not fit \(layout)")
        }
        guard kernel >= 1, height >= kernel, width >= kernel else {
            throw LightCapError.invalidArgument(reason: "average pool: a \(kernel)x\(kernel) window does not fit \(height)x\(width)")
        }
        self.channels = channels
        self.height = height
        self.width = width
        self.kernel = kernel
        self.layout = layout
    }

    /// src -> dst (not overlapping), the work split over `threads` threads of the OpenMP team
    /// oneDNN runs on.
    func run(src: UnsafePointer<Float>, dst: UnsafeMutablePointer<Float>, threads: Int) {
        lightcap_average_pool(src, layout.addressing(channels: channels, height: height, width: width), channels,
                              height, width, kernel, dst,
                              layout.addressing(channels: channels, height: outHeight, width: outWidth), threads)
    }

    /// Its name in profiles.
    var implementation: String { "lightcap_pool:\(LightCapKernels.isa)" }
}
