// SafetensorsFile: a memory-mapped, validated reader of the safetensors format
// (8-byte little-endian header length, JSON header, data section).

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file, unmapped when released.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeRawPointer
    let size: Int

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw LightCapError.fileNotFound(path: path) }
            throw LightCapError.io(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw LightCapError.io(path: path, reason: String(cString: strerror(errno)))
        }
        let size = Int(st.st_size)
        guard size >= 8 else { throw LightCapError.truncatedFile(path: path, size: size) }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw LightCapError.io(path: path, reason: "mmap: " + String(cString: strerror(errno)))
        }
        self.base = UnsafeRawPointer(p)
        self.size = size
    }

    /// Tells the kernel the pages of `range` may be dropped (they stay readable from the file).
    func release(_ range: Range<Int>) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page
        let end = range.upperBound / page * page
        if end > start {
            _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
        }
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }
}

/// A safetensors file mapped into memory. The header is validated when opening:
/// length, JSON, dtypes, shape x dtype size == byte range, ranges in bounds and disjoint.
public final class SafetensorsFile: @unchecked Sendable {
    /// Element type of a stored tensor.
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i8 = "I8"

        /// Bytes per element.
        public var size: Int {
            switch self {
            case .f32: return 4
            case .f16, .bf16: return 2
            case .i64: return 8
            case .i8: return 1
            }
        }
    }

    /// One header entry.
    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section.
        public let range: Range<Int>
    }

    /// The file's path.
    public let path: String
    /// Entries by name.
    public let entries: [String: Entry]
    /// The number of values in all tensors (a model's parameter count).
    public var parameterCount: Int { entries.values.reduce(0) { $0 + Tensor.elementCount($1.shape) } }
    /// `__metadata__` of the header (string values only).
    public let metadata: [String: String]
    let file: MappedFile
    let dataOffset: Int

    /// Maps and validates the file at `url`.
    public init(url: URL) throws {
        path = url.path
        file = try MappedFile(path: path)
        let headerLength = file.base.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= UInt64(file.size - 8) else {
            throw LightCapError.headerBeyondFile(path: path, headerLength: headerLength, fileSize: file.size)
        }
        dataOffset = 8 + Int(headerLength)
        let dataSize = file.size - dataOffset
        let headerData = Data(bytes: file.base + 8, count: Int(headerLength))
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw LightCapError.invalidHeader(path: path, reason: "the header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw LightCapError.invalidHeader(path: path, reason: "the header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                if let m = value as? [String: Any] {
                    for (k, v) in m { if let s = v as? String { metadata[k] = s } }
                }
                continue
            }
            entries[name] = try SafetensorsFile.parseEntry(name: name, value: value, dataSize: dataSize, path: path)
        }
        // Disjoint ranges: sort by start, compare neighbours (empty tensors never overlap).
        let sorted = entries.values.filter { !$0.range.isEmpty }.sorted {
            ($0.range.lowerBound, $0.name) < ($1.range.lowerBound, $1.name)
        }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.range.lowerBound < a.range.upperBound {
            throw LightCapError.overlappingTensors(first: a.name, second: b.name)
        }
        self.entries = entries
        self.metadata = metadata
    }

    private static func parseEntry(name: String, value: Any, dataSize: Int, path: String) throws -> Entry {
        guard let info = value as? [String: Any] else {
            throw LightCapError.invalidHeader(path: path, reason: "entry '\(name)' is not an object")
        }
        guard let dtypeName = info["dtype"] as? String else {
            throw LightCapError.invalidHeader(path: path, reason: "entry '\(name)' has no dtype")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw LightCapError.unsupportedDtype(tensor: name, dtype: dtypeName)
        }
        guard let shapeValues = info["shape"] as? [Any], let shape = integers(shapeValues), shape.allSatisfy({ $0 >= 0 }) else {
            throw LightCapError.invalidHeader(path: path, reason: "entry '\(name)' has no valid shape")
        }
        guard let offsetValues = info["data_offsets"] as? [Any], let offsets = integers(offsetValues),
              offsets.count == 2 else {
            throw LightCapError.invalidHeader(path: path, reason: "entry '\(name)' has no valid data_offsets")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin >= 0, end >= begin, end <= dataSize else {
            throw LightCapError.tensorOutOfRange(tensor: name, begin: begin, end: end, dataSize: dataSize)
        }
        var elements = 1
        for d in shape {
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { throw LightCapError.byteSizeMismatch(tensor: name, shape: shape, dtype: dtypeName, bytes: end - begin) }
            elements = product
        }
        let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, bytes == end - begin else {
            throw LightCapError.byteSizeMismatch(tensor: name, shape: shape, dtype: dtypeName, bytes: end - begin)
        }
        return Entry(name: name, dtype: dtype, shape: shape, range: begin..<end)
    }

    private static func integers(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            guard let n = v as? Int else { return nil }
            out.append(n)
        }
        return out
    }

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// The header entry of `name`.
    public func entry(named name: String) throws -> Entry {
        guard let e = entries[name] else { throw LightCapError.missingTensor(key: name) }
        return e
    }

    /// The tensor `name` as Float32: a view into the mapping for aligned F32, a converted copy
    /// for F16/BF16 (or misaligned F32).
    public func tensor(named name: String) throws -> Tensor {
        let e = try entry(named: name)
        let count = Tensor.elementCount(e.shape)
        let start = file.base + dataOffset + e.range.lowerBound
        switch e.dtype {
        case .f32:
            if Int(bitPattern: start) % MemoryLayout<Float>.alignment == 0 {
                let p = UnsafeMutablePointer(mutating: start.assumingMemoryBound(to: Float.self))
                return Tensor(shape: e.shape, storage: TensorStorage(viewing: p, count: count, owner: file))
            }
            let storage = TensorStorage(count: count)
            UnsafeMutableRawPointer(storage.base).copyMemory(from: start, byteCount: count * 4)
            return Tensor(shape: e.shape, storage: storage)
        case .f16:
            let storage = TensorStorage(count: count)
            for i in 0..<count {
                storage.base[i] = SafetensorsFile.halfToFloat(start.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
            }
            return Tensor(shape: e.shape, storage: storage)
        case .bf16:
            let storage = TensorStorage(count: count)
            for i in 0..<count {
                let bits = UInt32(start.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16
                storage.base[i] = Float(bitPattern: bits)
            }
            return Tensor(shape: e.shape, storage: storage)
        case .i64, .i8:
            throw LightCapError.wrongDtype(tensor: name, expected: "F32, F16 or BF16", actual: e.dtype.rawValue)
        }
    }

    /// The I64 tensor `name` as integers (fixtures).
    public func int64s(named name: String) throws -> [Int] {
        let e = try entry(named: name)
        guard e.dtype == .i64 else {
            throw LightCapError.wrongDtype(tensor: name, expected: "I64", actual: e.dtype.rawValue)
        }
        let start = file.base + dataOffset + e.range.lowerBound
        return (0..<Tensor.elementCount(e.shape)).map {
            Int(Int64(littleEndian: start.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)))
        }
    }

    /// The I8 tensor `name` (INT8 weights).
    public func int8s(named name: String) throws -> [Int8] {
        let e = try entry(named: name)
        guard e.dtype == .i8 else {
            throw LightCapError.wrongDtype(tensor: name, expected: "I8", actual: e.dtype.rawValue)
        }
        let start = file.base + dataOffset + e.range.lowerBound
        return [Int8](UnsafeBufferPointer(start: start.assumingMemoryBound(to: Int8.self), count: Tensor.elementCount(e.shape)))
    }

    /// Lets the kernel drop the resident pages of tensor `name` (after packing it elsewhere).
    /// Views stay valid: the pages are read again from the file if touched.
    public func releasePages(of name: String) {
        guard let e = entries[name] else { return }
        file.release((dataOffset + e.range.lowerBound)..<(dataOffset + e.range.upperBound))
    }

    /// IEEE 754 half to single precision.
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1f
        var mantissa = UInt32(h & 0x3ff)
        if exponent == 0x1f {  // inf / nan
            return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            var e = -1
            repeat { mantissa <<= 1; e += 1 } while mantissa & 0x400 == 0
            mantissa &= 0x3ff
            return Float(bitPattern: sign | UInt32(127 - 15 - e) << 23 | (mantissa << 13))
        }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }
}

/// Writes a safetensors file (F32, I64 and I8 tensors), for tests and tools.
public enum SafetensorsWriter {
    /// A tensor to write: F32 scalars, I64 integers or I8 levels.
    public enum Value {
        case f32(Tensor)
        case i64([Int], shape: [Int])
        case i8([Int8], shape: [Int])
    }

    /// The bytes of a safetensors file holding `tensors` (sorted by name, 8-byte aligned header).
    public static func data(_ tensors: [String: Value]) -> Data {
        var header: [String] = []
        var body = Data()
        for name in tensors.keys.sorted() {
            let begin = body.count
            let dtype: String
            let shape: [Int]
            switch tensors[name]! {
            case .f32(let t):
                dtype = "F32"; shape = t.shape
                t.withUnsafeBufferPointer { body.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self), count: $0.count * 4)) }
            case .i64(let values, let s):
                dtype = "I64"; shape = s
                for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { body.append(contentsOf: $0) } }
            case .i8(let values, let s):
                dtype = "I8"; shape = s
                values.withUnsafeBytes { body.append(contentsOf: $0) }
            }
            let shapeText = shape.map(String.init).joined(separator: ",")
            header.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shapeText)],\"data_offsets\":[\(begin),\(body.count)]}")
        }
        var json = "{" + header.joined(separator: ",") + "}"
        while (8 + json.utf8.count) % 8 != 0 { json += " " }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(json.utf8))
        out.append(body)
        return out
    }

    /// Writes `tensors` to `url`.
    public static func write(_ tensors: [String: Value], to url: URL) throws {
        try data(tensors).write(to: url)
    }
}
