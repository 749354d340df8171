// Decoding's options (the top-2B selection's tests: LightCapModelTests/TopCandidatesTests).
import XCTest
@testable import LightCap
import LightCapTestSupport

final class DecodingTests: XCTestCase {
    func testDecodingOptionsDefaults() {
        let o = DecodingOptions()
        XCTAssertEqual(o.beamSize, 1)
        XCTAssertEqual(o.maxLength, 20)
        XCTAssertTrue(o.useCache)
    }
}
