import XCTest
@testable import LightCapCore

final class LightCapCoreSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
