// Fuzzes config.json: JSON, types, defaults and every consistency check of Configuration.validate.
import Foundation
import FuzzSupport
import LightCapCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    do {
        let config = try Configuration.decode(Fuzz.data(start, count))
        // What `lightcap inspect` and the tools write back must read again without a crash.
        if let encoded = try? JSONEncoder().encode(config) { _ = try? Configuration.decode(encoded) }
    } catch {
        Fuzz.expectTyped(error, [LightCapError.self], "config.json")
    }
    return 0
}
