// The resident memory of the test process, for the tests that check a reader leaks nothing.

import Foundation

public enum ProcessMemory {
    /// The resident set of this process now, in bytes (Linux: /proc/self/statm; 0 elsewhere).
    public static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
