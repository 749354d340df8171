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
}
