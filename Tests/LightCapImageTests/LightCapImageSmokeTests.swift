import XCTest
@testable import LightCapImage

final class LightCapImageSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
