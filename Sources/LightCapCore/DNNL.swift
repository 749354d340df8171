// The one file that speaks to oneDNN (libdnnl 2.6, C API): engine, streams, threads, sgemm,
// and the primitive helpers (memory descriptors, reorders, convolution, pooling) used by Conv2d.

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

    /// Sets the oneDNN (OpenMP) thread count for kernels run from the calling thread.
    public static func set(_ count: Int) {
        guard count >= 1, let p = symbol("omp_set_num_threads") else { return }
        unsafeBitCast(p, to: SetFn.self)(Int32(count))
    }

    /// The thread count kernels started from the calling thread will use.
    public static var current: Int {
        guard let p = symbol("omp_get_max_threads") else { return 1 }
        return Int(unsafeBitCast(p, to: GetFn.self)())
    }
}
