// SessionPool: the caption sessions of the service, reused from request to request. A worker
// takes one (or makes one when none is free), captions, and gives it back; the service's
// concurrency limit bounds how many ever exist.

import Foundation
import LightCap

/// A lock-protected stack of idle `CaptionSession`s over one `Captioner`.
final class SessionPool: @unchecked Sendable {
    let captioner: Captioner
    private let lock = NSLock()
    private var idle: [CaptionSession] = []
    /// Sessions made so far (for tests: it stays at most the concurrency limit).
    private(set) var made = 0

    init(captioner: Captioner) {
        self.captioner = captioner
    }

    /// Runs `body` with a session of its own, then keeps the session for the next caller.
    func withSession<T>(_ body: (CaptionSession) throws -> T) throws -> T {
        let session = try take()
        defer { give(session) }
        return try body(session)
    }

    private func take() throws -> CaptionSession {
        lock.lock()
        if let session = idle.popLast() {
            lock.unlock()
            return session
        }
        made += 1
        lock.unlock()
        return try captioner.makeSession()
    }

    private func give(_ session: CaptionSession) {
        lock.lock()
        idle.append(session)
        lock.unlock()
    }
}
