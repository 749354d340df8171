import Foundation
import XCTest

// What the command-line test classes share: finding the built `lightcap` and running it.

struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
}

class LightCapCLITestCase: XCTestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    var executable: URL {
        // The test bundle sits in the build products folder, beside the executable.
        var dir = Bundle.main.bundleURL
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            dir = bundle.bundleURL.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("lightcap")
    }

    /// A `lightcap` process with its standard streams on pipes, not yet started.
    func process(_ args: [String], cwd: URL? = nil) throws -> (Process, stdin: Pipe, stdout: Pipe, stderr: Pipe) {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            XCTFail("the lightcap executable is not at \(executable.path) (swift build builds it)")
            throw XCTSkip("no executable")
        }
        let p = Process()
        p.executableURL = executable
        p.arguments = args
        if let cwd { p.currentDirectoryURL = cwd }
        var env = ProcessInfo.processInfo.environment
        env["LIGHTCAP_MODEL"] = nil
        p.environment = env
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        return (p, inp, out, err)
    }

    /// Runs `lightcap` to the end with `stdin` as its standard input (written from another
    /// thread, so a large input never waits on an unread output).
    func lightcap(_ args: [String], stdin: String? = nil, cwd: URL? = nil) throws -> Run {
        let (p, inp, out, err) = try process(args, cwd: cwd)
        try p.run()
        let writer = inp.fileHandleForWriting
        let input = Data((stdin ?? "").utf8)
        let written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? writer.write(contentsOf: input)
            try? writer.close()
            written.signal()
        }
        let errors = PipeReader(err.fileHandleForReading)
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = errors.readToEnd()
        p.waitUntilExit()
        written.wait()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

/// Reads a pipe on another thread as its data comes: line by line, or to its end.
final class PipeReader: @unchecked Sendable {
    private let condition = NSCondition()
    private var buffer = Data()
    private var closed = false

    init(_ handle: FileHandle) {
        DispatchQueue.global().async {
            while true {
                let chunk = handle.availableData
                self.condition.lock()
                if chunk.isEmpty { self.closed = true } else { self.buffer.append(chunk) }
                self.condition.broadcast()
                self.condition.unlock()
                if chunk.isEmpty { return }
            }
        }
    }

    /// The next whole line (without its newline), or nil at the end or after `timeout` seconds.
    func nextLine(timeout: TimeInterval) -> String? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer = Data(buffer[(newline + 1)...])
                return line
            }
            if closed || !condition.wait(until: deadline) { return nil }
        }
    }

    /// Everything not yet returned, once the writer has closed the pipe.
    func readToEnd() -> Data {
        condition.lock()
        defer { condition.unlock() }
        while !closed { condition.wait() }
        return buffer
    }
}
