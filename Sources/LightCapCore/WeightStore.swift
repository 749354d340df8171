// WeightStore: a strict, scoped view over a safetensors file. Every key read is recorded;
// `finish()` rejects the keys nobody read.

import Foundation

/// Strict access to model weights under a key prefix (`store.scoped("visual").scoped("layer1")`).
/// Errors name the full key; non-finite values are rejected; `finish()` lists unused keys.
public final class WeightStore: @unchecked Sendable {
    /// Keys taken so far, shared by every scope of one file.
    final class Tracker: @unchecked Sendable {
        private let lock = NSLock()
        private var used: Set<String> = []
        func mark(_ key: String) { lock.lock(); used.insert(key); lock.unlock() }
        func isUsed(_ key: String) -> Bool { lock.lock(); defer { lock.unlock() }; return used.contains(key) }
    }

    /// The underlying file.
    public let file: SafetensorsFile
    /// Key prefix of this scope, "" or ending with ".".
    public let prefix: String
    let tracker: Tracker

    /// The root scope of `file`.
    public init(file: SafetensorsFile) {
        self.file = file
        self.prefix = ""
        self.tracker = Tracker()
    }

    private init(file: SafetensorsFile, prefix: String, tracker: Tracker) {
        self.file = file
        self.prefix = prefix
        self.tracker = tracker
    }

    /// A sub-scope: keys are read as `prefix + component + "." + key`.
    public func scoped(_ component: String) -> WeightStore {
        WeightStore(file: file, prefix: prefix + component + ".", tracker: tracker)
    }

    /// A numbered sub-scope (`layer.0`).
    public func scoped(_ index: Int) -> WeightStore { scoped(String(index)) }

    /// The full key of `key` in this scope.
    public func fullKey(_ key: String) -> String { prefix + key }

    /// Whether `key` exists in this scope.
    public func contains(_ key: String) -> Bool { file.entries[prefix + key] != nil }

    /// Keys under this scope (full names), sorted.
    public var keys: [String] { file.names.filter { $0.hasPrefix(prefix) } }

    /// The tensor `key` with exactly `shape`, all values finite. Marks it used.
    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        let full = prefix + key
        guard let entry = file.entries[full] else { throw LightCapError.missingTensor(key: full) }
        guard entry.shape == shape else {
            throw LightCapError.shapeMismatch(key: full, expected: shape, actual: entry.shape)
        }
        return try take(key)
    }

    /// The tensor `key` of any shape, all values finite. Marks it used.
    public func take(_ key: String) throws -> Tensor {
        let full = prefix + key
        let tensor = try file.tensor(named: full)
        try WeightStore.checkFinite(tensor, key: full)
        tracker.mark(full)
        return tensor
    }

    /// The I8 tensor `key` with exactly `shape` (INT8 weights). Marks it used.
    public func takeInt8(_ key: String, shape: [Int]) throws -> [Int8] {
        let full = prefix + key
        guard let entry = file.entries[full] else { throw LightCapError.missingTensor(key: full) }
        guard entry.shape == shape else {
            throw LightCapError.shapeMismatch(key: full, expected: shape, actual: entry.shape)
        }
        let values = try file.int8s(named: full)
        tracker.mark(full)
        return values
    }

    /// Marks `key` used without reading it (a tensor the engine deliberately ignores).
    public func skip(_ key: String) throws {
        let full = prefix + key
        guard file.entries[full] != nil else { throw LightCapError.missingTensor(key: full) }
        tracker.mark(full)
    }

    /// Lets the kernel drop the file pages of `key` once it has been packed into other memory.
    public func releasePages(of key: String) { file.releasePages(of: prefix + key) }

    /// The keys of the file (all scopes) not taken so far, sorted.
    public var untakenKeys: [String] { file.names.filter { !tracker.isUsed($0) } }

    /// Throws `unusedTensors` listing every key of the file (all scopes) that was never taken.
    public func finish() throws {
        let unused = untakenKeys
        if !unused.isEmpty { throw LightCapError.unusedTensors(keys: unused) }
    }

    static func checkFinite(_ tensor: Tensor, key: String) throws {
        try tensor.withUnsafeBufferPointer { p in
            // Fast pass on the bit patterns (vectorises): the largest |x| as bits is below the
            // infinity pattern iff every value is finite.
            let bits = UnsafeRawBufferPointer(p).bindMemory(to: UInt32.self)
            var largest: UInt32 = 0
            for b in bits { largest = max(largest, b & 0x7FFF_FFFF) }
            guard largest >= 0x7F80_0000 else { return }
            for i in 0..<p.count where !p[i].isFinite {
                throw LightCapError.nonFiniteWeights(key: key, index: i, value: p[i])
            }
        }
    }
}
