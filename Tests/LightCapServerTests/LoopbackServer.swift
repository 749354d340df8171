// The service on a real loopback socket, and a plain HTTP/1.1 client for it (POSIX sockets,
// `Connection: close`, every request on its own connection): the tests see exactly the bytes a
// client would, and need no HTTP client library.

import Foundation
import Hummingbird
#if canImport(Glibc)
import Glibc
#endif

/// An answer: status, headers (lower-cased names) and body.
struct HTTPReply: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
}

struct LoopbackError: Error, CustomStringConvertible {
    var description: String
}

/// A running service on 127.0.0.1 and a free port; `stop()` shuts it down.
final class LoopbackServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    /// Starts `make(port)`'s application and waits until it accepts connections.
    init<App: ApplicationProtocol>(_ make: (Int) throws -> App) async throws {
        let port = try Self.freePort()
        let app = try make(port)
        self.port = port
        // SIGUSR2 asks for a graceful shutdown (`stop`); the tests run one server at a time.
        task = Task { try await app.runService(gracefulShutdownSignals: [.sigusr2]) }
        let deadline = Date().addingTimeInterval(20)
        while true {
            if let fd = try? Self.connect(port: port) { close(fd); break }
            guard Date() < deadline else { throw LoopbackError(description: "the server did not start on port \(port)") }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
    }

    /// Shuts the server down gracefully and waits for it.
    func stop() async {
        kill(getpid(), SIGUSR2)
        await finished()
    }

    /// Waits until the server has stopped (after a shutdown begun elsewhere).
    func finished() async {
        _ = try? await task.value
    }

    /// Sends one request (off the cooperative threads: the socket calls block) and reads the whole answer.
    /// `split`: send the head and the body's first `split.bytes` bytes, run `split.then` (on the
    /// sending thread), wait up to `split.pause` seconds, then send the rest; an answer that
    /// arrives during the wait ends the sending.
    func request(_ method: String, _ path: String, headers: [String: String] = [:], body: [UInt8]? = nil,
                 split: (bytes: Int, pause: Double, then: @Sendable () -> Void)? = nil) async throws -> HTTPReply {
        let port = self.port
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result {
                    try Self.exchange(port: port, method: method, path: path, headers: headers, body: body, split: split)
                })
            }
        }
    }

    static func exchange(port: Int, method: String, path: String, headers: [String: String], body: [UInt8]?,
                         split: (bytes: Int, pause: Double, then: @Sendable () -> Void)? = nil) throws -> HTTPReply {
        let fd = try connect(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        let chunked = headers.keys.contains { $0.lowercased() == "transfer-encoding" }
        if !chunked && (body != nil || method == "POST" || method == "PUT") { head += "Content-Length: \(body?.count ?? 0)\r\n" }
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + (body ?? [])
        let headBytes = bytes.count - (body?.count ?? 0)
        var sent = 0
        var paused = split == nil
        while sent < bytes.count {
            if !paused, let split, sent >= headBytes + split.bytes {
                paused = true
                split.then()
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, Int32(split.pause * 1000)) > 0 { break }  // answered early
            }
            let end = paused ? bytes.count : min(bytes.count, headBytes + (split?.bytes ?? 0))
            // The server may answer (413) and close before it has read everything: stop sending then.
            let n = bytes[sent..<end].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        return try parse(received)
    }

    static func parse(_ bytes: [UInt8]) throws -> HTTPReply {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let split = (0..<max(0, bytes.count - 3)).first(where: { Array(bytes[$0..<$0 + 4]) == separator }) else {
            throw LoopbackError(description: "no complete HTTP answer (\(bytes.count) bytes)")
        }
        let lines = String(decoding: bytes[0..<split], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw LoopbackError(description: "bad status line '\(lines[0])'")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(bytes[(split + 4)...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var out: [UInt8] = [], i = 0
            while let end = (i..<max(i, body.count - 1)).first(where: { body[$0] == 13 && body[$0 + 1] == 10 }),
                  let size = Int(String(decoding: body[i..<end], as: UTF8.self), radix: 16), size > 0 {
                out += body[(end + 2)..<min(body.count, end + 2 + size)]
                i = end + 2 + size + 2
            }
            body = out
        }
        return HTTPReply(status: status, headers: headers, body: Data(body))
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoopbackError(description: "socket: \(String(cString: strerror(errno)))") }
        var address = loopback(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw LoopbackError(description: "connect to port \(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// A port the kernel hands out for 127.0.0.1 (bound, read, released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw LoopbackError(description: "no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
