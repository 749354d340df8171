// Loads the Pillow fixtures written by `python -m lightcap_train.tools.image_fixtures` (scripts/test.sh).
import Foundation
import XCTest
@testable import LightCapImage

struct ImageManifest: Decodable {
    struct Case: Decodable {
        let name: String
        let file: String
        let lossless: Bool
        let decoded: [Int]
        let resized_size: [Int]
        let resized: String?
        let cropped: [Int]
    }
    struct Draft: Decodable {
        let file: String
        let denom: Int
        let pixels: String
        let size: [Int]
    }
    struct DraftSide: Decodable {
        let side: Int
        let size: [Int]
    }
    struct Hostile: Decodable {
        let file: String
        let error: String
    }
    struct WrongExtension: Decodable {
        let file: String
        let same_as: String
    }
    let size: Int
    let mean: [Float]
    let std: [Float]
    let cases: [Case]
    let draft: [Draft]
    let draft_sides: [DraftSide]
    let hostile: [Hostile]
    let wrong_extension: WrongExtension
}

enum ImageFixtures {
    /// `$LIGHTCAP_FIXTURES/images`; skips when the variable is unset, fails when it is set and the
    /// manifest is missing.
    static func directory() throws -> URL {
        guard let root = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"], !root.isEmpty else {
            throw XCTSkip("LIGHTCAP_FIXTURES is not set")
        }
        let dir = URL(fileURLWithPath: root).appendingPathComponent("images")
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("manifest.json").path) else {
            XCTFail("LIGHTCAP_FIXTURES=\(root) but \(dir.path)/manifest.json is missing "
                    + "(run python -m lightcap_train.tools.image_fixtures --out \(dir.path))")
            throw FixtureMissing()
        }
        return dir
    }

    struct FixtureMissing: Error {}

    static func manifest() throws -> (URL, ImageManifest) {
        let dir = try directory()
        let data = try Data(contentsOf: dir.appendingPathComponent("manifest.json"))
        return (dir, try JSONDecoder().decode(ImageManifest.self, from: data))
    }

    static func rgb(_ dir: URL, _ name: String, _ size: [Int]) throws -> RGBImage {
        let bytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent(name)))
        return RGBImage(width: size[0], height: size[1], pixels: bytes)
    }

    static func floats(_ url: URL) throws -> [Float] {
        let data = try Data(contentsOf: url)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}

/// Agreement of two 8-bit buffers: share of identical values and the largest difference.
struct ByteAgreement: CustomStringConvertible {
    var total = 0
    var equal = 0
    var maxDiff = 0

    mutating func add(_ a: [UInt8], _ b: [UInt8]) {
        precondition(a.count == b.count)
        total += a.count
        for i in 0..<a.count {
            let d = abs(Int(a[i]) - Int(b[i]))
            if d == 0 { equal += 1 }
            maxDiff = max(maxDiff, d)
        }
    }

    var fraction: Double { total == 0 ? 1 : Double(equal) / Double(total) }
    var description: String {
        String(format: "%.4f%% identical of %d values, max diff %d", fraction * 100, total, maxDiff)
    }
}
