import XCTest
@testable import LightCapText

final class LightCapTextSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
