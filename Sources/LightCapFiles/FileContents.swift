// Whole-file reads that never hand Foundation an empty file: Data(contentsOf:) and
// String(contentsOf:) of Swift 6.3's Foundation leak a 4 KiB buffer on every read of an empty
// regular file (LeakSanitizer shows it under the fuzzers), and an empty model, vocabulary, image
// or annotation file is exactly what a hostile or broken input may be.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads files without Foundation's leak on empty ones.
public enum FileContents {
    /// The bytes of the file at `url` (`options` as for `Data(contentsOf:options:)`); an empty
    /// regular file gives empty `Data` without reading it. Errors are Foundation's, as before.
    public static func read(_ url: URL, options: Data.ReadingOptions = []) throws -> Data {
        var info = stat()
        if stat(url.path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size == 0 { return Data() }
        return try Data(contentsOf: url, options: options)
    }

    /// The lines of UTF-8 text as Python reads a text file (universal newlines: "\n", "\r\n" and
    /// "\r" each end a line), without the last line when it is empty (the newline at the end of
    /// a file); nil when the bytes are not UTF-8. vocab.txt and concepts.txt, as the reference
    /// reads them (`read_lines`).
    public static func lines(_ data: Data) -> [String]? {
        guard String(validating: data, as: UTF8.self) != nil else { return nil }
        return data.withUnsafeBytes { raw -> [String] in
            let bytes = raw.bindMemory(to: UInt8.self)
            // Line ends are ASCII, so every line is valid UTF-8 on its own.
            func line(_ range: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
            var lines: [String] = []
            var start = 0, i = 0
            while i < bytes.count {
                let byte = bytes[i]
                if byte == 0x0A || byte == 0x0D {
                    lines.append(line(start..<i))
                    if byte == 0x0D && i + 1 < bytes.count && bytes[i + 1] == 0x0A { i += 1 }
                    start = i + 1
                }
                i += 1
            }
            lines.append(line(start..<bytes.count))
            if lines.last == "" { lines.removeLast() }
            return lines
        }
    }
}
