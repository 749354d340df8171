// The resident memory of the test process, for the tests that check a reader leaks nothing.

import Foundation

public enum ProcessMemory {
    /// The resident set of this process now, in bytes (Linux: /proc/self/statm; 0 elsewhere).
    public static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// How much the resident set grew while `body` ran `times` times, in bytes: the leak tests
    /// read an empty file thousands of times (4 KiB lost a read would show as tens of MB).
    public static func growth(repeating times: Int, _ body: () throws -> Void) rethrows -> Int {
        let before = residentBytes()
        for _ in 0..<times { try body() }
        return residentBytes() - before
    }
}
