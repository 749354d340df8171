// Tensor: a contiguous Float32 array with a shape, owning its storage or viewing a mapped file.

/// The memory behind a tensor: an owned 64-byte aligned buffer, or a read-only view into a
/// memory-mapped file (kept alive by `owner`).
public final class TensorStorage: @unchecked Sendable {
    /// First scalar.
    public let base: UnsafeMutablePointer<Float>
    /// Number of scalars.
    public let count: Int
    /// The object that owns mapped memory; nil when this storage owns (and frees) `base`.
    let owner: AnyObject?

    /// A zero-filled owned buffer of `count` scalars.
    public init(count: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1) * 4)
        self.base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.owner = nil
    }

    /// A read-only view of `count` scalars at `base`, kept alive by `owner`.
    init(viewing base: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        self.base = base
        self.count = count
        self.owner = owner
    }

    /// Whether the memory is a view into a mapped file (never written).
    public var isMapped: Bool { owner != nil }

    deinit {
        if owner == nil { UnsafeMutableRawPointer(base).deallocate() }
    }
}

/// A contiguous, row-major Float32 tensor. Value semantics: writing to a shared or mapped
/// tensor copies it first.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    /// Dimensions, outermost first.
    public private(set) var shape: [Int]
    /// The memory (shared between copies until one writes).
    public private(set) var storage: TensorStorage

    /// Number of scalars (product of `shape`).
    public var count: Int { storage.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// A zero tensor of `shape`.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.storage = TensorStorage(count: Tensor.elementCount(shape))
    }

    /// A tensor holding `scalars` (row-major) with `shape`. The count must match.
    public init(shape: [Int], scalars: [Float]) {
        precondition(Tensor.elementCount(shape) == scalars.count,
                     "Tensor: \(scalars.count) scalars do not fill shape \(shape)")
        self.init(zeros: shape)
        scalars.withUnsafeBufferPointer { src in
            if let p = src.baseAddress { storage.base.update(from: p, count: src.count) }
        }
    }

    /// A tensor filled by `body(i)` for each flat index.
    public init(shape: [Int], generator body: (Int) -> Float) {
        self.init(zeros: shape)
        for i in 0..<count { storage.base[i] = body(i) }
    }

    /// A tensor on existing storage (no copy).
    public init(shape: [Int], storage: TensorStorage) {
        precondition(Tensor.elementCount(shape) == storage.count,
                     "Tensor: storage of \(storage.count) scalars does not fill shape \(shape)")
        self.shape = shape
        self.storage = storage
    }

    /// Product of the dimensions.
    public static func elementCount(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// The scalars as an array (a copy).
    public var scalars: [Float] {
        Array(UnsafeBufferPointer(start: storage.base, count: count))
    }

    /// Whether this tensor reads a memory-mapped file.
    public var isMapped: Bool { storage.isMapped }

    /// Read-only access to the scalars.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base, count: count))
    }

    /// Mutable access to the scalars; copies first if the storage is shared or mapped.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.base, count: count))
    }

    /// Makes the storage owned and unshared (copying when needed).
    public mutating func makeUnique() {
        if storage.isMapped || !isKnownUniquelyReferenced(&storage) {
            let copy = TensorStorage(count: count)
            copy.base.update(from: storage.base, count: count)
            storage = copy
        }
    }

    /// An owned copy (detached from any mapped file).
    public func owned() -> Tensor {
        var t = self
        if t.storage.isMapped {
            t.makeUnique()
        }
        return t
    }

    /// Flat element access.
    public subscript(flat index: Int) -> Float {
        get {
            precondition(index >= 0 && index < count, "Tensor: index \(index) out of range \(count)")
            return storage.base[index]
        }
        set {
            precondition(index >= 0 && index < count, "Tensor: index \(index) out of range \(count)")
            makeUnique()
            storage.base[index] = newValue
        }
    }

    /// Element access by a multi-index (row-major).
    public subscript(_ indices: Int...) -> Float {
        get { self[flat: flatIndex(indices)] }
        set { self[flat: flatIndex(indices)] = newValue }
    }

    private func flatIndex(_ indices: [Int]) -> Int {
        precondition(indices.count == shape.count, "Tensor: \(indices.count) indices for rank \(shape.count)")
        var flat = 0
        for (i, d) in zip(indices, shape) {
            precondition(i >= 0 && i < d, "Tensor: index \(indices) out of shape \(shape)")
            flat = flat * d + i
        }
        return flat
    }

    /// The same scalars with another shape of equal element count (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(Tensor.elementCount(newShape) == count, "Tensor: cannot reshape \(shape) to \(newShape)")
        var t = self
        t.shape = newShape
        return t
    }

    /// Rows `range` of the outermost dimension (a copy).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "Tensor: rows \(range) out of \(shape)")
        let inner = shape.dropFirst().reduce(1, *)
        let out = Tensor(zeros: [range.count] + shape.dropFirst())
        out.storage.base.update(from: storage.base + range.lowerBound * inner, count: range.count * inner)
        return out
    }

    /// Largest absolute element-wise difference (shapes must hold the same count).
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(count == other.count, "Tensor: comparing \(shape) with \(other.shape)")
        var m: Float = 0
        for i in 0..<count {
            let d = abs(storage.base[i] - other.storage.base[i])
            if d.isNaN { return .nan }
            m = max(m, d)
        }
        return m
    }

    /// Largest absolute element.
    public var maxAbs: Float {
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(storage.base[i])) }
        return m
    }

    public var description: String {
        let head = scalars.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(head)\(count > 8 ? ", ..." : "")])"
    }
}
