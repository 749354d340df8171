// Fuzzes the safetensors reader and the strict weight store: header length, header JSON, dtypes,
// shapes, data offsets, overlap, truncation; then every tensor is read (F32 views and copies,
// F16 / BF16 conversion, I64) through a WeightStore, as the model loaders read them.
import Foundation
import FuzzSupport
import LightCapCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let url = Fuzz.file("model.safetensors", Fuzz.data(start, count))
    do {
        let file = try SafetensorsFile(url: url)
        _ = file.parameterCount
        let store = WeightStore(file: file)
        for name in file.names {
            let entry = try file.entry(named: name)
            switch entry.dtype {
            case .i64:
                _ = try file.int64s(named: name)
                try store.skip(name)
            case .i8:
                let levels = try store.takeInt8(name, shape: entry.shape)
                precondition(levels.count == Tensor.elementCount(entry.shape), "I8 tensor '\(name)' came back with another count")
            case .f32, .f16, .bf16:
                do {
                    let tensor = try store.take(name, shape: entry.shape)
                    precondition(tensor.shape == entry.shape, "tensor '\(name)' came back with another shape")
                } catch LightCapError.nonFiniteWeights {}  // a finding only if it were not typed
            }
            file.releasePages(of: name)
        }
        try? store.finish()
        try? store.scoped("visual").scoped(0).finish()
    } catch {
        Fuzz.expectTyped(error, [LightCapError.self], "safetensors")
    }
    return 0
}
