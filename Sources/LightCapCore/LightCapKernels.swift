// LightCapKernels: what LightCap's C kernels (CKernels: Winograd, direct convolution, average
// pool) share, seen from Swift: the vector path they take and where their threads come from.

import CKernels

enum LightCapKernels {
    /// The kernels' vector path ("avx2+fma", or "generic" where the CPU lacks AVX2 and FMA or
    /// LIGHTCAP_KERNEL_ISA=generic caps it).
    static var isa: String { String(cString: lightcap_kernel_isa()) }

    /// Whether the kernels' threads are OpenMP's (libgomp, loaded with oneDNN), not only the caller.
    static var threadsFromOpenMP: Bool { lightcap_kernel_uses_openmp() != 0 }
}
