import XCTest
@testable import LightCapCore
import LightCapTestSupport

/// The safetensors reader: round trips, dtypes, and every kind of bad file (made here).
final class SafetensorsTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws { dir = try temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ data: Data, _ name: String = "w.safetensors") throws -> URL {
        let url = dir.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    /// Opening `data` must throw an error whose description contains every one of `words`.
    func assertRejects(_ data: Data, mentioning words: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ check: (LightCapError) -> Bool) throws {
        let url = try write(data)
        do {
            _ = try SafetensorsFile(url: url)
            XCTFail("accepted a bad file", file: file, line: line)
        } catch let error as LightCapError {
            XCTAssertTrue(check(error), "unexpected error \(error)", file: file, line: line)
            for w in words { XCTAssertTrue(error.description.contains(w), "'\(error)' does not mention '\(w)'", file: file, line: line) }
        }
    }

    func testRoundTripF32AndI64() throws {
        var rng = SeededRandom(seed: 11)
        let a = rng.tensor([3, 5]), b = rng.tensor([7])
        let url = try write(SafetensorsWriter.data(["a": .f32(a), "b": .f32(b), "ids": .i64([1, -2, 3], shape: [3])]))
        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(file.names, ["a", "b", "ids"])
        let ta = try file.tensor(named: "a")
        XCTAssertEqual(ta.shape, [3, 5])
        XCTAssertEqual(ta.scalars, a.scalars)
        XCTAssertTrue(ta.isMapped, "aligned F32 must be a view into the mapping")
        XCTAssertEqual(try file.tensor(named: "b").scalars, b.scalars)
        XCTAssertEqual(try file.int64s(named: "ids"), [1, -2, 3])
        XCTAssertThrowsError(try file.tensor(named: "ids"))
        XCTAssertThrowsError(try file.int64s(named: "a"))
        XCTAssertThrowsError(try file.tensor(named: "nope")) { XCTAssertEqual($0 as? LightCapError, .missingTensor(key: "nope")) }
    }

    func testMappedTensorCopiesOnWrite() throws {
        let url = try write(SafetensorsWriter.data(["a": .f32(Tensor(shape: [2], scalars: [1, 2]))]))
        let file = try SafetensorsFile(url: url)
        var t = try file.tensor(named: "a")
        t[flat: 0] = 5
        XCTAssertFalse(t.isMapped)
        XCTAssertEqual(try file.tensor(named: "a").scalars, [1, 2])
    }

    func testF16AndBF16() throws {
        // Expected values: Swift's own Float16 conversion (IEEE) and BF16 = upper 16 bits of F32.
        let values: [Float] = [0, -0.0, 1, -2.5, 65504, 6.1035156e-05, 5.9604645e-08, 0.333251953125]
        var f16: [UInt8] = []
        for v in values { withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { f16.append(contentsOf: $0) } }
        var bf16: [UInt8] = []
        for v in values { withUnsafeBytes(of: UInt16(v.bitPattern >> 16).littleEndian) { bf16.append(contentsOf: $0) } }
        let n = values.count * 2
        let header = "{\"h\":{\"dtype\":\"F16\",\"shape\":[\(values.count)],\"data_offsets\":[0,\(n)]},"
            + "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,\(values.count / 2)],\"data_offsets\":[\(n),\(2 * n)]},"
            + "\"__metadata__\":{\"format\":\"pt\"}}"
        let file = try SafetensorsFile(url: try write(rawSafetensors(header: header, body: f16 + bf16)))
        XCTAssertEqual(file.metadata["format"], "pt")
        XCTAssertEqual(try file.tensor(named: "h").scalars, values.map { Float(Float16($0)) })
        let b = try file.tensor(named: "b")
        XCTAssertEqual(b.shape, [2, values.count / 2])
        XCTAssertEqual(b.scalars, values.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) })
        // Every half bit pattern (inf and NaN included) agrees with Float16.
        for bits in UInt16.min...UInt16.max {
            let ours = SafetensorsFile.halfToFloat(bits), theirs = Float(Float16(bitPattern: bits))
            XCTAssertTrue(ours.bitPattern == theirs.bitPattern || (ours.isNaN && theirs.isNaN), "half \(bits)")
        }
    }

    func testMisalignedF32IsCopied() throws {
        // Header of odd length: the data section starts at an odd address.
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
        var body: [UInt8] = []
        for v: Float in [1.5, -3] { withUnsafeBytes(of: v.bitPattern.littleEndian) { body.append(contentsOf: $0) } }
        XCTAssertNotEqual((8 + header.utf8.count) % 4, 0)
        let file = try SafetensorsFile(url: try write(rawSafetensors(header: header, body: body)))
        XCTAssertEqual(try file.tensor(named: "a").scalars, [1.5, -3])
    }

    func testTruncatedFile() throws {
        var rng = SeededRandom(seed: 12)
        let whole = SafetensorsWriter.data(["w": .f32(rng.tensor([64, 64]))])
        try assertRejects(whole.prefix(whole.count - 100), mentioning: ["'w'", "truncated"]) {
            if case .tensorOutOfRange(tensor: "w", _, _, _) = $0 { return true } else { return false }
        }
        try assertRejects(whole.prefix(5), mentioning: ["truncated", "5 bytes"]) {
            if case .truncatedFile = $0 { return true } else { return false }
        }
        try assertRejects(Data(), mentioning: ["truncated"]) {
            if case .truncatedFile = $0 { return true } else { return false }
        }
    }

    func testHeaderLengthBeyondFile() throws {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
        try assertRejects(rawSafetensors(header: header, body: [0, 0, 0, 0], headerLength: 1 << 40),
                          mentioning: ["1099511627776", "beyond the end"]) {
            if case .headerBeyondFile = $0 { return true } else { return false }
        }
        try assertRejects(rawSafetensors(header: header, body: [0, 0, 0, 0], headerLength: UInt64.max),
                          mentioning: ["beyond the end"]) {
            if case .headerBeyondFile = $0 { return true } else { return false }
        }
    }

    func testHeaderNotJSON() throws {
        try assertRejects(rawSafetensors(header: "{\"a\": [1, 2", body: []), mentioning: ["not valid JSON"]) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
        try assertRejects(rawSafetensors(header: "[1]", body: []), mentioning: ["not a JSON object"]) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
        try assertRejects(rawSafetensors(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", body: [0, 0, 0, 0]),
                          mentioning: ["'a'", "shape"]) {
            if case .invalidHeader = $0 { return true } else { return false }
        }
    }

    func testOverlappingOffsets() throws {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}"
        try assertRejects(rawSafetensors(header: header, body: [UInt8](repeating: 0, count: 12)), mentioning: ["'a'", "'b'", "overlapping"]) {
            $0 == .overlappingTensors(first: "a", second: "b")
        }
    }

    func testOutOfRangeOffsets() throws {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}"
        try assertRejects(rawSafetensors(header: header, body: [UInt8](repeating: 0, count: 12)), mentioning: ["'a'", "[8, 16)", "12 bytes"]) {
            $0 == .tensorOutOfRange(tensor: "a", begin: 8, end: 16, dataSize: 12)
        }
        let reversed = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}"
        try assertRejects(rawSafetensors(header: reversed, body: [UInt8](repeating: 0, count: 12)), mentioning: ["'a'"]) {
            if case .tensorOutOfRange = $0 { return true } else { return false }
        }
        let negative = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}"
        try assertRejects(rawSafetensors(header: negative, body: [UInt8](repeating: 0, count: 12)), mentioning: ["'a'"]) {
            if case .tensorOutOfRange = $0 { return true } else { return false }
        }
    }

    func testUnknownDtype() throws {
        let header = "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}"
        try assertRejects(rawSafetensors(header: header, body: [UInt8](repeating: 0, count: 16)), mentioning: ["'a'", "F128"]) {
            $0 == .unsupportedDtype(tensor: "a", dtype: "F128")
        }
    }

    func testShapeDoesNotFitRange() throws {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}"
        try assertRejects(rawSafetensors(header: header, body: [UInt8](repeating: 0, count: 8)), mentioning: ["'a'", "[3]", "8-byte"]) {
            $0 == .byteSizeMismatch(tensor: "a", shape: [3], dtype: "F32", bytes: 8)
        }
        let huge = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}"
        try assertRejects(rawSafetensors(header: huge, body: [UInt8](repeating: 0, count: 8)), mentioning: ["'a'"]) {
            if case .byteSizeMismatch = $0 { return true } else { return false }
        }
    }

    /// A header claiming 10^12 elements is refused from the header alone, whatever its offsets
    /// say: the claimed bytes must lie in the file, so nothing of that size is ever allocated.
    func testTrillionElementsAreRefusedBeforeAllocating() throws {
        let small = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,16]}}"
        try assertRejects(rawSafetensors(header: small, body: [UInt8](repeating: 0, count: 16)), mentioning: ["'a'", "16-byte"]) {
            $0 == .byteSizeMismatch(tensor: "a", shape: [1_000_000, 1_000_000], dtype: "F32", bytes: 16)
        }
        let claimed = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4000000000000]}}"
        try assertRejects(rawSafetensors(header: claimed, body: [UInt8](repeating: 0, count: 16)), mentioning: ["'a'", "out of range"]) {
            $0 == .tensorOutOfRange(tensor: "a", begin: 0, end: 4_000_000_000_000, dataSize: 16)
        }
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafetensorsFile(url: dir.appendingPathComponent("none.safetensors"))) {
            guard case .fileNotFound = $0 as? LightCapError else { return XCTFail("\($0)") }
        }
    }
}
