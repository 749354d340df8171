// The one file that speaks to oneDNN (libdnnl 2.6, C API): engine, streams, threads, sgemm,
// and the primitive helpers (memory descriptors, reorders, convolution, pooling, matmul) used by
// Conv2d and PackedLinear.

import CDNNL
#if canImport(Glibc)
import Glibc
#endif

/// oneDNN's process-wide CPU engine and small helpers around its C API.
enum DNNL {
    /// The CPU engine, created once.
    final class Engine: @unchecked Sendable {
        let handle: dnnl_engine_t
        init() {
            var e: dnnl_engine_t?
            let status = dnnl_engine_create(&e, dnnl_cpu, 0)
            precondition(status == dnnl_success && e != nil, "oneDNN: cannot create the CPU engine (status \(status.rawValue))")
            handle = e!
        }
    }

    static let engine = Engine()

    /// Throws `LightCapError.kernel` unless `status` is success.
    static func check(_ status: dnnl_status_t, _ operation: @autoclosure () -> String) throws {
        if status != dnnl_success {
            throw LightCapError.kernel(operation: operation(), status: Int(status.rawValue))
        }
    }

    /// A stream on the engine (CPU streams are cheap; one per forward call, never shared).
    final class Stream {
        let handle: dnnl_stream_t
        init() throws {
            var s: dnnl_stream_t?
            try check(dnnl_stream_create(&s, engine.handle, dnnl_stream_default_flags.rawValue), "stream create")
            handle = s!
        }
        func wait() { dnnl_stream_wait(handle) }
        deinit { dnnl_stream_destroy(handle) }
    }

    /// Row-major C = alpha * op(A) op(B) + beta * C with oneDNN's sgemm.
    /// op(A) is [m, k], op(B) is [k, n]; `lda`, `ldb`, `ldc` are row strides.
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        let ta = CChar(UInt8(ascii: transA ? "T" : "N"))
        let tb = CChar(UInt8(ascii: transB ? "T" : "N"))
        let status = dnnl_sgemm(ta, tb, dnnl_dim_t(m), dnnl_dim_t(n), dnnl_dim_t(k), alpha,
                                a, dnnl_dim_t(lda), b, dnnl_dim_t(ldb), beta, c, dnnl_dim_t(ldc))
        // Arguments are checked by the callers; a failure here is a programming error.
        precondition(status == dnnl_success, "oneDNN sgemm failed (status \(status.rawValue)) m=\(m) n=\(n) k=\(k)")
    }
}

/// What oneDNN's u8 x s8 kernels (INT8 convolutions, the vocabulary product) can hold here.
public enum OneDNNInt8 {
    /// Whether oneDNN runs its VNNI int8 kernels here (the effective ISA, which
    /// DNNL_MAX_CPU_ISA can lower).
    public static let hasVNNI: Bool = {
        let isa = dnnl_get_effective_cpu_isa().rawValue
        return isa == dnnl_cpu_isa_avx2_vnni.rawValue || isa & dnnl_cpu_isa_avx512_core_vnni.rawValue == dnnl_cpu_isa_avx512_core_vnni.rawValue
    }()

    /// The largest weight level a u8 x s8 product may use here: 127 with VNNI (four products
    /// added straight into int32), else 63: without VNNI the kernels add two u8 x s8 products
    /// in a saturating int16 (`vpmaddubsw`), and 2 x 255 x 63 = 32130 < 32767.
    public static var weightLevels: Int { hasVNNI ? 127 : 63 }
}

/// The number of threads oneDNN uses on the calling thread (OpenMP runtime: the setting is
/// per calling thread, so set it on the thread that runs the model, e.g. at the start of a call).
public enum Threads {
    private typealias SetFn = @convention(c) (Int32) -> Void
    private typealias GetFn = @convention(c) () -> Int32

    private static func symbol(_ name: String) -> UnsafeMutableRawPointer? {
        // libgomp is loaded with libdnnl; look the OpenMP entry points up there.
        let handle = dlopen(nil, RTLD_NOW)
        return dlsym(handle, name)
    }

    private static let setNumThreads = symbol("omp_set_num_threads").map { unsafeBitCast($0, to: SetFn.self) }
    private static let getMaxThreads = symbol("omp_get_max_threads").map { unsafeBitCast($0, to: GetFn.self) }

    /// Sets the oneDNN (OpenMP) thread count for kernels run from the calling thread.
    public static func set(_ count: Int) {
        guard count >= 1, let f = setNumThreads else { return }
        f(Int32(count))
    }

    /// The thread count kernels started from the calling thread will use.
    public static var current: Int {
        guard let f = getMaxThreads else { return 1 }
        return Int(f())
    }

    /// Runs `body` with `count` threads current on the calling thread, then restores the count.
    public static func with<T>(_ count: Int, _ body: () throws -> T) rethrows -> T {
        let previous = current
        if previous != count { set(count) }
        defer { if previous != count { set(previous) } }
        return try body()
    }
}

// MARK: - Primitives (memory descriptors, convolution, pooling, reorder)

extension DNNL {
    typealias MemoryDesc = dnnl_memory_desc_t

    // Execution argument kinds (dnnl_types.h).
    static let argSrc: Int32 = 1
    static let argDst: Int32 = 17
    static let argWeights: Int32 = 33
    static let argBias: Int32 = 41
    static let argScratchpad: Int32 = 80

    /// Plain layouts (and `any`: the primitive chooses).
    enum Layout {
        case any, nchw, nhwc, nChw8c, nChw16c, oihw, x
        var tag: dnnl_format_tag_t {
            switch self {
            case .any: return dnnl_format_tag_any
            case .nChw8c: return dnnl_nChw8c
            case .nChw16c: return dnnl_nChw16c
            case .nchw: return dnnl_nchw
            case .nhwc: return dnnl_nhwc
            case .oihw: return dnnl_oihw
            case .x: return dnnl_x
            }
        }
    }

    /// Convolution algorithms.
    enum ConvolutionKind {
        case direct, winograd, auto
        var alg: dnnl_alg_kind_t {
            switch self {
            case .direct: return dnnl_convolution_direct
            case .winograd: return dnnl_convolution_winograd
            case .auto: return dnnl_convolution_auto
            }
        }
    }

    /// Execution argument roles.
    enum Role {
        case src, dst, weights, bias, scratchpad
        var arg: Int32 {
            switch self {
            case .src: return argSrc
            case .dst: return argDst
            case .weights: return argWeights
            case .bias: return argBias
            case .scratchpad: return argScratchpad
            }
        }
    }

    /// Prepared arguments of one primitive execution.
    struct Arguments {
        fileprivate var raw: [dnnl_exec_arg_t] = []
        mutating func append(_ role: Role, _ memory: Memory) {
            raw.append(dnnl_exec_arg_t(arg: role.arg, memory: memory.handle))
        }
    }

    /// A descriptor of an F32 tensor with `dims` in `layout`.
    static func desc(_ dims: [Int], _ layout: Layout) throws -> MemoryDesc {
        try desc(dims, layout.tag)
    }

    /// A descriptor of a tensor of `type` (F32 by default) with `dims` in the layout `tag`.
    static func desc(_ dims: [Int], _ tag: dnnl_format_tag_t, type: dnnl_data_type_t = dnnl_f32) throws -> MemoryDesc {
        var md = MemoryDesc()
        let d = dims.map { dnnl_dim_t($0) }
        try check(dnnl_memory_desc_init_by_tag(&md, Int32(d.count), d, type, tag), "memory desc \(dims)")
        return md
    }

    /// Bytes a tensor of `md` occupies.
    static func bytes(_ md: MemoryDesc) -> Int {
        withUnsafePointer(to: md) { Int(dnnl_memory_desc_get_size($0)) }
    }

    static func equal(_ a: MemoryDesc, _ b: MemoryDesc) -> Bool {
        withUnsafePointer(to: a) { pa in withUnsafePointer(to: b) { pb in dnnl_memory_desc_equal(pa, pb) != 0 } }
    }

    /// A 64-byte aligned, zeroed byte buffer.
    final class Buffer: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
        init(bytes: Int) {
            self.bytes = bytes
            pointer = AlignedMemory.allocateZeroed(bytes: max(bytes, 64))
        }
        /// A buffer holding a copy of `tensor`'s floats.
        convenience init(copying tensor: Tensor) {
            self.init(bytes: tensor.count * MemoryLayout<Float>.size)
            tensor.withUnsafeBufferPointer { pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        }
        deinit { AlignedMemory.free(pointer) }
    }

    /// A oneDNN memory object over caller-owned memory.
    final class Memory {
        let handle: dnnl_memory_t
        let desc: MemoryDesc
        init(_ desc: MemoryDesc, _ pointer: UnsafeMutableRawPointer?) throws {
            var m: dnnl_memory_t?
            var d = desc
            try check(dnnl_memory_create(&m, &d, engine.handle, pointer), "memory create")
            handle = m!
            self.desc = desc
        }
        func setPointer(_ pointer: UnsafeMutableRawPointer) throws {
            try check(dnnl_memory_set_data_handle(handle, pointer), "memory set data handle")
        }
        deinit { dnnl_memory_destroy(handle) }
    }

    /// A created primitive and its descriptor (user scratchpad: callers pass one per execution,
    /// so one primitive may run on several threads at once).
    final class Primitive: @unchecked Sendable {
        let handle: dnnl_primitive_t
        let pd: dnnl_primitive_desc_t

        /// Creates the primitive for `opDesc` (a pointer to an op descriptor).
        /// `outputScales`: one per output channel (INT8 convolutions: dst = scale * int32 sum).
        init(opDesc: UnsafeRawPointer, postOps: (sum: Bool, relu: Bool) = (false, false), outputScales: [Float]? = nil,
             what: String) throws {
            var attr: dnnl_primitive_attr_t?
            try check(dnnl_primitive_attr_create(&attr), "attr create")
            defer { dnnl_primitive_attr_destroy(attr) }
            try check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode")
            if let outputScales {
                try check(dnnl_primitive_attr_set_output_scales(attr, dnnl_dim_t(outputScales.count), 1 << 1, outputScales), "output scales")
            }
            if postOps.sum || postOps.relu {
                var po: dnnl_post_ops_t?
                try check(dnnl_post_ops_create(&po), "post-ops create")
                defer { dnnl_post_ops_destroy(po) }
                if postOps.sum { try check(dnnl_post_ops_append_sum(po, 1), "post-op sum") }
                if postOps.relu { try check(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_relu, 0, 0), "post-op relu") }
                try check(dnnl_primitive_attr_set_post_ops(attr, po), "set post-ops")
            }
            var pd: dnnl_primitive_desc_t?
            try check(dnnl_primitive_desc_create(&pd, opDesc, attr, engine.handle, nil), what)
            var p: dnnl_primitive_t?
            let status = dnnl_primitive_create(&p, pd)
            if status != dnnl_success { dnnl_primitive_desc_destroy(pd); try check(status, what + " (create)") }
            self.pd = pd!
            self.handle = p!
        }

        /// Reorder between two layouts of the same tensor; with `scale`, dst = scale * src
        /// (into an integer type: rounded to nearest even, saturated).
        convenience init(reorderFrom src: MemoryDesc, to dst: MemoryDesc, scale: Float? = nil) throws {
            var pd: dnnl_primitive_desc_t?
            var s = src, d = dst
            var attr: dnnl_primitive_attr_t?
            try check(dnnl_primitive_attr_create(&attr), "attr create")
            defer { dnnl_primitive_attr_destroy(attr) }
            try check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode")
            if let scale {
                try check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, [scale]), "reorder scale")
            }
            try check(dnnl_reorder_primitive_desc_create(&pd, &s, engine.handle, &d, engine.handle, attr), "reorder")
            try self.init(pd: pd!)
        }

        private init(pd: dnnl_primitive_desc_t) throws {
            var p: dnnl_primitive_t?
            let status = dnnl_primitive_create(&p, pd)
            if status != dnnl_success { dnnl_primitive_desc_destroy(pd); try check(status, "primitive create") }
            self.pd = pd
            self.handle = p!
        }

        /// The memory descriptor of `query` (src, weights, dst, scratchpad ...).
        func desc(_ query: dnnl_query_t, _ index: Int32 = 0) -> MemoryDesc {
            dnnl_primitive_desc_query_md(pd, query, index)?.pointee ?? MemoryDesc()
        }

        var srcDesc: MemoryDesc { desc(dnnl_query_src_md) }
        var dstDesc: MemoryDesc { desc(dnnl_query_dst_md) }
        var weightsDesc: MemoryDesc { desc(dnnl_query_weights_md, 0) }
        var biasDesc: MemoryDesc { desc(dnnl_query_weights_md, 1) }
        var scratchpadDesc: MemoryDesc { desc(dnnl_query_scratchpad_md) }
        var scratchpadBytes: Int { DNNL.bytes(scratchpadDesc) }

        /// oneDNN's implementation name (e.g. "jit:avx512_core").
        var implementation: String {
            var s: UnsafePointer<CChar>?
            _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s)
            return s.map { String(cString: $0) } ?? "?"
        }

        func execute(_ stream: Stream, _ args: [dnnl_exec_arg_t]) throws {
            try check(dnnl_primitive_execute(handle, stream.handle, Int32(args.count), args), "execute \(implementation)")
        }

        func execute(_ stream: Stream, _ args: Arguments) throws {
            try execute(stream, args.raw)
        }

        deinit {
            dnnl_primitive_destroy(handle)
            dnnl_primitive_desc_destroy(pd)
        }
    }

    /// A forward-inference convolution for input `src` ([1, C, H, W], any layout or fixed).
    static func convolution(src: MemoryDesc, outChannels: Int, inChannels: Int, kernel: Int, outHeight: Int, outWidth: Int,
                            stride: Int, padding: Int, bias: Bool, sum: Bool, relu: Bool,
                            algorithm: ConvolutionKind, dstLayout: Layout = .any) throws -> Primitive {
        var s = src
        var w = try desc([outChannels, inChannels, kernel, kernel], dnnl_format_tag_any)
        var b = try desc([outChannels], dnnl_x)
        var d = try desc([1, outChannels, outHeight, outWidth], dstLayout)
        var op = dnnl_convolution_desc_t()
        let strides: [dnnl_dim_t] = [dnnl_dim_t(stride), dnnl_dim_t(stride)]
        let pads: [dnnl_dim_t] = [dnnl_dim_t(padding), dnnl_dim_t(padding)]
        try check(withUnsafePointer(to: &b) { bp in
            dnnl_convolution_forward_desc_init(&op, dnnl_forward_inference, algorithm.alg, &s, &w, bias ? bp : nil, &d,
                                               strides, pads, pads)
        }, "convolution desc \(outChannels)x\(inChannels)x\(kernel)x\(kernel)")
        return try withUnsafePointer(to: &op) {
            try Primitive(opDesc: UnsafeRawPointer($0), postOps: (sum, relu),
                          what: "convolution \(outChannels)x\(inChannels)x\(kernel)x\(kernel) stride \(stride)")
        }
    }

    /// An INT8 forward-inference convolution: u8 source ([1, C, H, W], layout chosen by oneDNN),
    /// s8 weights, then dst = scale[oc] * (sum + bias[oc]) (+ dst's old value if `sum`), then
    /// ReLU if `relu`: oneDNN's u8s8 kernels (VNNI's `vpdpbusd`, else AVX2's `vpmaddubsw` pairs).
    /// `output`: u8 (s32 bias, the probe's case) or f32 (f32 bias, the network's).
    static func convolutionInt8(inChannels: Int, height: Int, width: Int, outChannels: Int, kernel: Int, stride: Int,
                                padding: Int, scales: [Float], sum: Bool = false, relu: Bool,
                                output: dnnl_data_type_t = dnnl_u8) throws -> Primitive {
        let (oh, ow) = (Conv2d.outputSize(height, kernel: kernel, stride: stride, padding: padding),
                        Conv2d.outputSize(width, kernel: kernel, stride: stride, padding: padding))
        var s = try desc([1, inChannels, height, width], dnnl_format_tag_any, type: dnnl_u8)
        var w = try desc([outChannels, inChannels, kernel, kernel], dnnl_format_tag_any, type: dnnl_s8)
        var b = try desc([outChannels], dnnl_x, type: output == dnnl_f32 ? dnnl_f32 : dnnl_s32)
        var d = try desc([1, outChannels, oh, ow], dnnl_format_tag_any, type: output)
        var op = dnnl_convolution_desc_t()
        let strides: [dnnl_dim_t] = [dnnl_dim_t(stride), dnnl_dim_t(stride)]
        let pads: [dnnl_dim_t] = [dnnl_dim_t(padding), dnnl_dim_t(padding)]
        try check(dnnl_convolution_forward_desc_init(&op, dnnl_forward_inference, dnnl_convolution_direct, &s, &w, &b, &d,
                                                     strides, pads, pads),
                  "INT8 convolution desc \(outChannels)x\(inChannels)x\(kernel)x\(kernel)")
        return try withUnsafePointer(to: &op) {
            try Primitive(opDesc: UnsafeRawPointer($0), postOps: (sum, relu), outputScales: scales,
                          what: "INT8 convolution \(outChannels)x\(inChannels)x\(kernel)x\(kernel) stride \(stride)")
        }
    }

    /// A forward matmul dst [m, n] = src [m, k] x weights [k, n] (+ bias [1, n]), or with `batch`
    /// > 1 that many independent ones, dst [b, m, n] = src [b, m, k] x weights [b, k, n] (no
    /// bias). src and dst row-major, the weights in the layout the primitive prefers (`any`:
    /// blocked for brgemm; query `weightsDesc` and reorder them once).
    static func matmul(batch: Int = 1, m: Int, k: Int, n: Int, bias: Bool) throws -> Primitive {
        precondition(batch == 1 || !bias, "a batched matmul has no bias")
        let lead = batch == 1 ? [] : [batch]
        let rowMajor = batch == 1 ? dnnl_ab : dnnl_abc
        var s = try desc(lead + [m, k], rowMajor)
        var w = try desc(lead + [k, n], dnnl_format_tag_any)
        var b = try desc([1, n], dnnl_ab)
        var d = try desc(lead + [m, n], rowMajor)
        let dims = (batch == 1 ? "" : "\(batch)x") + "\(m)x\(k)x\(n)"
        var op = dnnl_matmul_desc_t()
        try check(withUnsafePointer(to: &b) { bp in dnnl_matmul_desc_init(&op, &s, &w, bias ? bp : nil, &d) },
                  "matmul desc \(dims)")
        return try withUnsafePointer(to: &op) { try Primitive(opDesc: UnsafeRawPointer($0), what: "matmul \(dims)") }
    }

    /// Average pooling with window = stride = `kernel`, no padding, on `src` [1, C, H, W].
    static func averagePool(src: MemoryDesc, channels: Int, height: Int, width: Int, kernel: Int) throws -> Primitive {
        var s = src
        var d = try desc([1, channels, height / kernel, width / kernel], dnnl_format_tag_any)
        var op = dnnl_pooling_desc_t()
        let k: [dnnl_dim_t] = [dnnl_dim_t(kernel), dnnl_dim_t(kernel)]
        let zero: [dnnl_dim_t] = [0, 0]
        try check(dnnl_pooling_forward_desc_init(&op, dnnl_forward_inference, dnnl_pooling_avg_exclude_padding,
                                                 &s, &d, k, k, zero, zero), "pooling desc")
        return try withUnsafePointer(to: &op) { try Primitive(opDesc: UnsafeRawPointer($0), what: "average pool \(kernel)") }
    }

    /// Runs a one-off reorder of `src` (layout `from`) into `dst` (layout `to`).
    static func reorder(_ src: UnsafeRawPointer, _ from: MemoryDesc, into dst: UnsafeMutableRawPointer, _ to: MemoryDesc) throws {
        let p = try Primitive(reorderFrom: from, to: to)
        let scratch = Buffer(bytes: p.scratchpadBytes)
        let a = try Memory(from, UnsafeMutableRawPointer(mutating: src))
        let b = try Memory(to, dst)
        let sp = try Memory(p.desc(dnnl_query_scratchpad_md), scratch.pointer)
        let stream = try Stream()
        try p.execute(stream, [dnnl_exec_arg_t(arg: argFrom, memory: a.handle), dnnl_exec_arg_t(arg: argTo, memory: b.handle),
                               dnnl_exec_arg_t(arg: argScratchpad, memory: sp.handle)])
        stream.wait()
    }

    static let argFrom: Int32 = 1
    static let argTo: Int32 = 17
}
