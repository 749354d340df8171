import XCTest
@testable import LightCap

final class LightCapSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
