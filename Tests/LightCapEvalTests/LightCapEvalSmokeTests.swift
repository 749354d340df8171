import XCTest
@testable import LightCapEval

final class LightCapEvalSmokeTests: XCTestCase {
    func testModuleLoads() { XCTAssertTrue(true) }
}
