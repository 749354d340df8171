import Foundation
@testable import LightCapCore

/// A fresh temporary directory, removed by the caller's `defer`.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The bytes of a safetensors file with a hand-written header JSON and body.
func rawSafetensors(header: String, body: [UInt8], headerLength: UInt64? = nil) -> Data {
    var out = Data()
    withUnsafeBytes(of: (headerLength ?? UInt64(header.utf8.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: Array(header.utf8))
    out.append(contentsOf: body)
    return out
}
