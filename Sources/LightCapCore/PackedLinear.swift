// PackedLinear: a fully connected layer whose weight is also packed once, at load, into the
// blocked layout of oneDNN's matmul primitive (brgemm on AVX-512: blocks of 16 inputs x 64
// outputs). It is for a wide layer read by a few rows, the heads' vocabulary product (1-5 rows
// per beam step, 20 rows for the exact scores after greedy decoding, by 30522 x 312 at base
// size): there sgemm re-packs the big operand at every call and reaches about 20 GFLOP/s at
// 20 rows (18 ms), the packed primitive about 70 (5.5 ms, oneDNN 2.6 on the Xeon of
// docs/DECODING.md). oneDNN fixes the row count M when it creates a primitive (a runtime M
// falls back to its plain gemm), so one primitive per (M, thread count) is created on first
// use (about 1 ms) and cached; more rows than `maxRows` run in chunks. The packed layout is the
// same for every M here; should oneDNN prefer another one for some M, those calls run `plain`.
// Plain twin: `plain` (sgemm on the row-major weight, and `Reference.linear`), compared in
// Tests/LightCapCoreTests/PackedLinearTests.swift.

import CDNNL
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `y[M, out] = x[M, in] W^T + b` (PyTorch's `nn.Linear`) through oneDNN's matmul on a weight
/// packed once. Read-only after init; calls from several threads at once are safe.
public final class PackedLinear: RowLinear, @unchecked Sendable {
    /// The same layer unpacked (row-major weight, one sgemm per call): the plain twin, and the
    /// path taken where the packed one is unavailable.
    public let plain: Linear
    /// The packed weight and the oneDNN memory objects over it and over the bias; nil where
    /// oneDNN could not create the primitive or the reorder.
    private let packed: Packed?
    /// One primitive per row count and thread count (nil: that M wants another weight layout).
    private var primitives: [Key: DNNL.Primitive?] = [:]
    private let lock = Lock()

    private struct Packed {
        let buffer: DNNL.Buffer
        let desc: DNNL.MemoryDesc
        let weights: DNNL.Memory
        let bias: DNNL.Memory?
    }

    private struct Key: Hashable {
        let rows: Int, threads: Int
    }

    /// Rows per primitive call; larger inputs run in chunks of this many rows.
    public static let maxRows = 64

    /// Input features.
    public var inFeatures: Int { plain.inFeatures }
    /// Output features.
    public var outFeatures: Int { plain.outFeatures }
    /// [out, in], owned (row-major, as loaded).
    public var weight: Tensor { plain.weight }
    /// [out] or nil.
    public var bias: Tensor? { plain.bias }
    /// Whether calls run the packed primitive (false: not packed, or oneDNN refused it; every
    /// call is `plain`).
    public var isPacked: Bool { packed != nil }

    /// Packs `linear`'s weight (the row-major copy stays in `plain`); with `pack` false it does
    /// not (no packed copy in memory: every call runs `plain`), for a caller that will not use it.
    public init(_ linear: Linear, pack: Bool = true) {
        plain = linear
        packed = pack ? Self.pack(linear) : nil
    }

    /// A packed layer from a [out, in] weight and optional [out] bias (`pack`: as above).
    public convenience init(weight: Tensor, bias: Tensor?, pack: Bool = true) throws {
        self.init(try Linear(weight: weight, bias: bias), pack: pack)
    }

    private static func pack(_ linear: Linear) -> Packed? {
        let (k, n) = (linear.inFeatures, linear.outFeatures)
        guard k > 0, n > 0 else { return nil }
        do {
            let primitive = try DNNL.matmul(m: 1, k: k, n: n, bias: linear.bias != nil)
            let desc = primitive.weightsDesc
            let buffer = DNNL.Buffer(bytes: DNNL.bytes(desc))
            // W [out, in] row-major is the matmul's weights [in, out] in layout `ba`.
            try linear.weight.withUnsafeBufferPointer {
                try DNNL.reorder($0.baseAddress!, try DNNL.desc([k, n], dnnl_ba), into: buffer.pointer, desc)
            }
            let weights = try DNNL.Memory(desc, buffer.pointer)
            let bias = try linear.bias.map { b in
                try DNNL.Memory(try DNNL.desc([1, n], dnnl_ab), UnsafeMutableRawPointer(b.storage.base))
            }
            return Packed(buffer: buffer, desc: desc, weights: weights, bias: bias)
        } catch {
            return nil
        }
    }

    /// The cached primitive for `rows` rows at the calling thread's oneDNN thread count.
    private func primitive(rows: Int, _ packed: Packed) -> DNNL.Primitive? {
        let key = Key(rows: rows, threads: Threads.current)
        return lock.withLock {
            if let known = primitives[key] { return known }
            let created = try? DNNL.matmul(m: rows, k: inFeatures, n: outFeatures, bias: packed.bias != nil)
            let usable = created.flatMap { DNNL.equal($0.weightsDesc, packed.desc) ? $0 : nil }
            primitives[key] = .some(usable)  // a nil entry remembers "use plain"
            return usable
        }
    }

    /// y = x W^T + b for `rows` rows: x is [rows, in], y is [rows, out] (both row-major).
    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        guard let packed else { return plain.apply(x, rows: rows, into: y) }
        var done = 0
        while done < rows {
            let m = min(Self.maxRows, rows - done)
            let (xm, ym) = (x + done * inFeatures, y + done * outFeatures)
            if let p = primitive(rows: m, packed) {
                do {
                    try run(p, packed, xm, ym)
                } catch {
                    // Shapes are fixed by the primitive; a failure here is a programming error.
                    preconditionFailure("oneDNN matmul failed: \(error)")
                }
            } else {
                plain.apply(xm, rows: m, into: ym)
            }
            done += m
        }
    }

    private func run(_ p: DNNL.Primitive, _ packed: Packed, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) throws {
        let scratch = DNNL.Buffer(bytes: p.scratchpadBytes)
        // `Arguments` holds raw handles: the memory objects must outlive the execution.
        let src = try DNNL.Memory(p.srcDesc, UnsafeMutableRawPointer(mutating: x))
        let dst = try DNNL.Memory(p.dstDesc, UnsafeMutableRawPointer(y))
        let scratchpad = try DNNL.Memory(p.scratchpadDesc, scratch.pointer)
        var args = DNNL.Arguments()
        args.append(.src, src)
        args.append(.weights, packed.weights)
        if let bias = packed.bias { args.append(.bias, bias) }
        args.append(.dst, dst)
        args.append(.scratchpad, scratchpad)
        let stream = try DNNL.Stream()
        try withExtendedLifetime((src, dst, scratchpad, scratch)) {
            try p.execute(stream, args)
            stream.wait()
        }
    }
}

/// A pthread mutex around the primitive cache (one captioner serves several threads at once).
private final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() {
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
