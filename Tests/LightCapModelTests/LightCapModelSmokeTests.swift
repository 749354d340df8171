import XCTest
@testable import LightCapModel

final class LightCapModelSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
