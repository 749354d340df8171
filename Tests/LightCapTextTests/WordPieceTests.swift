// Parity of WordPieceTokenizer with transformers' BertTokenizer on the corpus written by
// python/lightcap_train/tools/tokenizer_cases.py (LIGHTCAP_FIXTURES/tokenizer/{vocab.txt,cases.json}),
// plus small self-contained checks of the algorithm and its errors.
import Foundation
import LightCapTestSupport
import XCTest
@testable import LightCapText

final class WordPieceTests: XCTestCase {
    struct Corpus: Decodable {
        struct Case: Decodable {
            var text: String
            var tokens: [String]
            var ids: [Int]
            var decoded: String
            var decoded_skip_special: String
            var caption: String
        }
        struct CaseSet: Decodable {
            var do_lower_case: Bool
            var cases: [Case]
        }
        var sets: [CaseSet]
    }

    /// The fixture folder, or nil (skip) when LIGHTCAP_FIXTURES is unset; a set variable with
    /// missing files fails.
    func fixtureFolder() throws -> URL? {
        guard let root = ProcessInfo.processInfo.environment["LIGHTCAP_FIXTURES"] else { return nil }
        let folder = URL(fileURLWithPath: root).appendingPathComponent("tokenizer")
        for name in ["vocab.txt", "cases.json"] {
            let path = folder.appendingPathComponent(name).path
            if !FileManager.default.fileExists(atPath: path) {
                XCTFail("LIGHTCAP_FIXTURES is set but \(path) is missing (run python -m lightcap_train.tools.tokenizer_cases)")
                return nil
            }
        }
        return folder
    }

    func testMatchesBertTokenizerCorpus() throws {
        guard let folder = try fixtureFolder() else {
            throw XCTSkip("LIGHTCAP_FIXTURES not set")
        }
        let corpus = try JSONDecoder().decode(Corpus.self, from: Data(contentsOf: folder.appendingPathComponent("cases.json")))
        XCTAssertEqual(corpus.sets.count, 2)
        var checked = 0
        for set in corpus.sets {
            let tokenizer = try WordPieceTokenizer(vocabURL: folder.appendingPathComponent("vocab.txt"),
                                                   doLowerCase: set.do_lower_case)
            XCTAssertEqual(tokenizer.count, 30522)
            XCTAssertGreaterThan(set.cases.count, 30)
            for c in set.cases {
                let ids = tokenizer.encode(c.text)
                XCTAssertEqual(ids, c.ids, "lower=\(set.do_lower_case) text=\(c.text.debugDescription)")
                XCTAssertEqual(tokenizer.tokenize(c.text), c.tokens, "text=\(c.text.debugDescription)")
                XCTAssertEqual(tokenizer.decode(c.ids, skipSpecialTokens: false), c.decoded,
                               "decode of \(c.tokens)")
                XCTAssertEqual(tokenizer.decode(c.ids), c.decoded_skip_special, "decode of \(c.tokens)")
                XCTAssertEqual(tokenizer.decodeCaption(c.ids), c.caption, "caption of \(c.tokens)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 400)
    }

    // MARK: - Self-contained checks (tiny vocabulary)

    let tiny = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "##s", "run", "##ning", ".", "un", "##aff",
                "##able", "e"]

    func testGreedyLongestMatch() throws {
        let t = try WordPieceTokenizer(vocabulary: tiny)
        XCTAssertEqual(t.tokenize("A dogs running."), ["a", "dog", "##s", "run", "##ning", "."])
        XCTAssertEqual(t.tokenize("unaffable"), ["un", "##aff", "##able"])
        // A word that cannot be covered becomes one [UNK], not a partial split.
        XCTAssertEqual(t.tokenize("dogx"), ["[UNK]"])
        XCTAssertEqual(t.tokenize("É"), ["e"])
        XCTAssertEqual(t.tokenize(""), [])
        XCTAssertEqual(t.tokenize("a[MASK]a"), ["a", "[MASK]", "a"])
        XCTAssertEqual(t.decode(t.encode("A dogs running.")), "a dogs running.")
        XCTAssertEqual(t.decode([2, 5, 6, 3, 999, -1]), "a dog")
    }

    func testLongWordLimit() throws {
        let t = try WordPieceTokenizer(vocabulary: tiny + ["##a"], maxInputCharactersPerWord: 5)
        XCTAssertEqual(t.tokenize("aaaaa"), ["a", "##a", "##a", "##a", "##a"])
        XCTAssertEqual(t.tokenize("aaaaaa"), ["[UNK]"])
    }

    func testCanonicallyEquivalentSpellingsAreDistinct() throws {
        // Cased mode does not normalise: a decomposed "é" must not find the precomposed entry.
        let t = try WordPieceTokenizer(vocabulary: tiny + ["caf\u{E9}"], doLowerCase: false)
        XCTAssertEqual(t.tokenize("caf\u{E9}"), ["caf\u{E9}"])
        XCTAssertEqual(t.tokenize("cafe\u{301}"), ["[UNK]"])
    }

    func testErrors() throws {
        XCTAssertThrowsError(try WordPieceTokenizer(vocabulary: ["a", "b"])) { error in
            XCTAssertEqual(error as? TextError, .missingToken("[UNK]"))
        }
        let missing = URL(fileURLWithPath: "/nonexistent/vocab.txt")
        XCTAssertThrowsError(try WordPieceTokenizer(vocabURL: missing)) { error in
            guard case .unreadableVocabulary(let path, _)? = error as? TextError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(path, missing.path)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        XCTAssertThrowsError(try WordPieceTokenizer(vocabURL: empty)) { error in
            XCTAssertEqual(error as? TextError, .emptyVocabulary(path: empty.path))
        }
        let bad = dir.appendingPathComponent("bad.txt")
        try Data([0x5B, 0x55, 0x4E, 0x4B, 0x5D, 0x0A, 0xFF, 0xFE]).write(to: bad)
        XCTAssertThrowsError(try WordPieceTokenizer(vocabURL: bad)) { error in
            XCTAssertEqual(error as? TextError, .vocabularyNotUTF8(path: bad.path))
        }
        let crlf = dir.appendingPathComponent("crlf.txt")
        try Data("[PAD]\r\n[UNK]\r\ndog\r\n".utf8).write(to: crlf)
        let t = try WordPieceTokenizer(vocabURL: crlf)
        XCTAssertEqual(t.count, 3)
        XCTAssertEqual(t.encode("dog cat"), [2, 1])
    }

    /// An empty vocab.txt is `emptyVocabulary`, and reading it costs no memory (Foundation's
    /// Data(contentsOf:) leaks 4 KiB on each empty file).
    func testEmptyVocabularyFileLeaksNothing() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lightcap-empty-vocab-\(getpid()).txt")
        FileManager.default.createFile(atPath: url.path, contents: Data())
        defer { try? FileManager.default.removeItem(at: url) }
        let growth = try ProcessMemory.growth(repeating: 10_000) {
            XCTAssertThrowsError(try WordPieceTokenizer(vocabURL: url)) {
                XCTAssertEqual($0 as? TextError, .emptyVocabulary(path: url.path))
            }
        }
        XCTAssertLessThan(growth, 16 << 20, "reading empty files leaks")  // 4 KiB a read would be 40 MB
    }
}
