// Which files `lightcap caption` reads: files as given, folders searched (recursively) for
// images, and "-" for a list of paths on standard input, one a line.

import Foundation

enum ImageInputs {
    static let extensions: Set<String> = ["jpg", "jpeg", "png", "webp"]

    /// The image paths named by `arguments`, in order (a folder's images sorted by path).
    static func expand(_ arguments: [String], stdin: () -> String? = { readLine(strippingNewline: true) }) throws -> [String] {
        var out: [String] = []
        let fm = FileManager.default
        for arg in arguments {
            if arg == "-" {
                while let line = stdin() {
                    let path = pathLine(line)
                    if !path.isEmpty { out.append(path) }  // a bad path fails on its own, later
                }
                continue
            }
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: arg, isDirectory: &isDir) else { throw CLIError.noSuchPath(arg) }
            if !isDir.boolValue {
                out.append(arg)
                continue
            }
            guard let walker = fm.enumerator(atPath: arg) else { throw CLIError.unreadableFile(arg, "cannot list the folder") }
            var found: [String] = []
            while let rel = walker.nextObject() as? String {
                let name = (rel as NSString).lastPathComponent
                if name.hasPrefix(".") { continue }
                if extensions.contains((rel as NSString).pathExtension.lowercased()) {
                    found.append((arg as NSString).appendingPathComponent(rel))
                }
            }
            out += found.sorted()
        }
        return out
    }

    /// The path a line of standard input names: the line without surrounding spaces and tabs.
    static func pathLine(_ line: String) -> String {
        line.trimmingCharacters(in: .whitespaces)
    }
}

/// A one-line progress bar on standard error (only when it is a terminal).
struct ProgressBar {
    let total: Int
    let enabled: Bool
    private let start = ContinuousClock.now

    init(total: Int, enabled: Bool = isatty(2) == 1) {
        self.total = total
        self.enabled = enabled && total > 1
    }

    func update(_ done: Int, failed: Int) {
        guard enabled else { return }
        let width = 30
        let filled = total == 0 ? width : width * done / total
        let seconds = (ContinuousClock.now - start).seconds
        let rate = seconds > 0 ? Double(done) / seconds : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let fail = failed > 0 ? ", \(failed) failed" : ""
        let line = String(format: "\r[%@] %d/%d  %.1f img/s%@ ", bar, done, total, rate, fail)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
