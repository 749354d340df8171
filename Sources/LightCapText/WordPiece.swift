// WordPiece tokenizer and detokenizer of the fusion model (BERT uncased vocabulary).
//
// Behaves as transformers' `BertTokenizer` (the tokenizers-backed one of transformers 5):
//   1. special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) written literally in the text are kept whole;
//   2. the rest is normalised (BertNormalizer): control characters dropped, whitespace -> ' ',
//      spaces around CJK ideographs, then (uncased) NFD + nonspacing marks removed, then lowercase
//      character by character;
//   3. split on whitespace and around every punctuation character (BertPreTokenizer);
//   4. greedy longest-match WordPiece with the "##" continuation prefix, words longer than
//      100 characters or not coverable by the vocabulary become [UNK].
// Decoding follows the WordPiece decoder: "##" pieces join the previous piece, other pieces get a
// space, and ".", ",", "!", "?" lose the space before them.
// Parity: Tests/LightCapTextTests/WordPieceTests.swift against python/lightcap_train/tokenizer_cases.py.

import Foundation
import LightCapFiles

/// Errors of the text side, each naming the problem.
public enum TextError: Error, CustomStringConvertible, Equatable {
    /// The vocabulary file could not be read.
    case unreadableVocabulary(path: String, reason: String)
    /// The vocabulary file is not valid UTF-8.
    case vocabularyNotUTF8(path: String)
    /// The vocabulary has no entries.
    case emptyVocabulary(path: String)
    /// A token the tokenizer needs (e.g. "[UNK]") is not in the vocabulary.
    case missingToken(String)

    public var description: String {
        switch self {
        case let .unreadableVocabulary(path, reason): "cannot read vocabulary \(path): \(reason)"
        case let .vocabularyNotUTF8(path): "vocabulary \(path) is not valid UTF-8"
        case let .emptyVocabulary(path): "vocabulary \(path) is empty"
        case let .missingToken(token): "vocabulary has no \(token) token"
        }
    }
}

/// A piece of text as Unicode scalar values; vocabulary lookups compare scalars exactly
/// (Swift `String` equality would also match canonically equivalent spellings, the peer does not).
struct ScalarKey: Hashable {
    var scalars: [UInt32]
}

/// BERT WordPiece tokenizer over a `vocab.txt` (one token a line, id = line number).
public struct WordPieceTokenizer: Sendable {
    /// Token text of each id.
    public let vocabulary: [String]
    /// Whether the text is lowercased and its accents stripped (uncased BERT).
    public let doLowerCase: Bool
    /// Tokens kept whole when they appear literally in the text, and dropped by `decode` when asked.
    public let specialTokens: [String]
    /// The id given to words the vocabulary cannot cover.
    public let unknownID: Int
    /// Words longer than this many characters (after normalisation) become the unknown token.
    public let maxInputCharactersPerWord: Int

    private let ids: [ScalarKey: Int]
    private let specialIDs: [(scalars: [UInt32], id: Int)]
    private let specialIDSet: Set<Int>
    private let maxTokenLength: Int
    private static let prefix: [UInt32] = [0x23, 0x23]  // "##"

    /// Reads a vocabulary file (as transformers' `load_vocab`: lines split at "\n", "\r\n" or "\r";
    /// a repeated token keeps its last line number).
    public init(vocabURL: URL, doLowerCase: Bool = true, unknownToken: String = "[UNK]",
                specialTokens: [String] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) throws {
        let data: Data
        do { data = try FileContents.read(vocabURL) } catch {
            throw TextError.unreadableVocabulary(path: vocabURL.path, reason: "\(error.localizedDescription)")
        }
        guard let lines = FileContents.lines(data) else {
            throw TextError.vocabularyNotUTF8(path: vocabURL.path)
        }
        guard !lines.isEmpty else { throw TextError.emptyVocabulary(path: vocabURL.path) }
        try self.init(vocabulary: lines, doLowerCase: doLowerCase, unknownToken: unknownToken,
                      specialTokens: specialTokens)
    }

    /// Builds a tokenizer from the tokens in id order.
    public init(vocabulary: [String], doLowerCase: Bool = true, unknownToken: String = "[UNK]",
                specialTokens: [String] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                maxInputCharactersPerWord: Int = 100) throws {
        var ids = [ScalarKey: Int](minimumCapacity: vocabulary.count)
        var maxLength = 0
        for (id, token) in vocabulary.enumerated() {
            let key = ScalarKey(scalars: token.unicodeScalars.map(\.value))
            ids[key] = id
            maxLength = max(maxLength, key.scalars.count)
        }
        func lookup(_ token: String) -> Int? { ids[ScalarKey(scalars: token.unicodeScalars.map(\.value))] }
        guard let unk = lookup(unknownToken) else { throw TextError.missingToken(unknownToken) }
        self.vocabulary = vocabulary
        self.doLowerCase = doLowerCase
        self.specialTokens = specialTokens
        self.unknownID = unk
        self.maxInputCharactersPerWord = maxInputCharactersPerWord
        self.ids = ids
        self.maxTokenLength = maxLength
        // Special tokens missing from the vocabulary are simply not special here.
        var specials: [(scalars: [UInt32], id: Int)] = []
        for token in specialTokens where !token.isEmpty {
            if let id = lookup(token) { specials.append((token.unicodeScalars.map(\.value), id)) }
        }
        // Leftmost-longest matching: at one position the longest special token wins.
        self.specialIDs = specials.sorted { $0.scalars.count > $1.scalars.count }
        self.specialIDSet = Set(specials.map(\.id))
    }

    /// Number of tokens in the vocabulary.
    public var count: Int { vocabulary.count }

    /// The id of a token written exactly as in the vocabulary, or nil.
    public func id(of token: String) -> Int? {
        ids[ScalarKey(scalars: token.unicodeScalars.map(\.value))]
    }

    /// The token text of an id, or nil when the id is out of range.
    public func token(of id: Int) -> String? {
        vocabulary.indices.contains(id) ? vocabulary[id] : nil
    }

    /// Token ids of `text` (no [CLS]/[SEP] added).
    public func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        for segment in splitSpecial(Array(text.unicodeScalars)) {
            switch segment {
            case let .special(id): out.append(id)
            case let .text(scalars):
                for word in preTokenize(normalize(scalars)) { wordPiece(word, into: &out) }
            }
        }
        return out
    }

    /// Token strings of `text` ("##" marks a piece continuing a word).
    public func tokenize(_ text: String) -> [String] {
        encode(text).map { vocabulary[$0] }
    }

    /// Text of token ids: "##" pieces join the piece before, other pieces are separated by a space,
    /// and a lone ".", "?", "!" or "," sticks to the text before it. Ids outside the vocabulary are
    /// skipped (as the peer does); special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) are skipped
    /// when `skipSpecialTokens` is true.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        // Byte-level, as the peer: Swift's grapheme-aware `hasPrefix` would not see "##" before a
        // combining mark.
        var out: [UInt8] = []
        var first = true
        for id in ids {
            guard vocabulary.indices.contains(id) else { continue }
            if skipSpecialTokens && specialIDSet.contains(id) { continue }
            var piece = Array(vocabulary[id].utf8)
            if !first {
                if piece.starts(with: [0x23, 0x23]) { piece.removeFirst(2) } else { piece.insert(0x20, at: 0) }
            }
            first = false
            out += Self.cleanup(piece)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The caption of token ids (special tokens skipped), as people write it:
    /// `captionText(decode(ids))`.
    public func decodeCaption(_ ids: [Int]) -> String { Self.captionText(decode(ids)) }

    /// A decoded caption as people write it: no space before ':', ';', a closing bracket or '%',
    /// none after an opening bracket (decode's cleanup already joins '.', ',', '?', '!').
    /// `decode` stays equal to transformers'; the Python reference's
    /// `reference.wordpiece.caption_text` does the same (the fixture corpus checks it).
    public static func captionText(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        for (i, c) in scalars.enumerated() {
            let beforeClosing = i + 1 < scalars.count && captionClosing.contains(scalars[i + 1])
            let afterOpening = out.last.map { captionOpening.contains($0) } ?? false
            if c == " " && (beforeClosing || afterOpening) { continue }
            out.append(c)
        }
        return String(out)
    }

    private static let captionClosing: Set<Unicode.Scalar> = [":", ";", ")", "]", "}", "%"]
    private static let captionOpening: Set<Unicode.Scalar> = ["(", "[", "{"]

    // MARK: - Steps

    enum Segment: Equatable {
        case special(Int)
        case text([Unicode.Scalar])
    }

    /// Splits out special tokens written literally in the text (exact, case-sensitive match).
    func splitSpecial(_ scalars: [Unicode.Scalar]) -> [Segment] {
        guard !specialIDs.isEmpty else { return [.text(scalars)] }
        var segments: [Segment] = []
        var start = 0, i = 0
        outer: while i < scalars.count {
            if scalars[i] == "[" {
                for special in specialIDs where i + special.scalars.count <= scalars.count {
                    var match = true
                    for (k, v) in special.scalars.enumerated() where scalars[i + k].value != v {
                        match = false
                        break
                    }
                    if match {
                        if start < i { segments.append(.text(Array(scalars[start..<i]))) }
                        segments.append(.special(special.id))
                        i += special.scalars.count
                        start = i
                        continue outer
                    }
                }
            }
            i += 1
        }
        if start < scalars.count { segments.append(.text(Array(scalars[start...]))) }
        return segments
    }

    /// BertNormalizer: clean text, CJK spacing, (uncased) NFD + strip nonspacing marks, lowercase.
    func normalize(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var cleaned: [Unicode.Scalar] = []
        cleaned.reserveCapacity(scalars.count)
        for s in scalars {
            if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                cleaned.append(" ")
            } else if Self.isChineseCharacter(s) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        guard doLowerCase else { return cleaned }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: cleaned)
        let decomposed = String(view).decomposedStringWithCanonicalMapping
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(cleaned.count)
        for s in decomposed.unicodeScalars where s.properties.generalCategory != .nonspacingMark {
            if s.isASCII {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 32)! : s)
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return out
    }

    /// BertPreTokenizer: split on whitespace, and isolate every punctuation character.
    func preTokenize(_ scalars: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var words: [ArraySlice<Unicode.Scalar>] = []
        var start = 0
        for (i, s) in scalars.enumerated() {
            if Self.isWhitespace(s) {
                if start < i { words.append(scalars[start..<i]) }
                start = i + 1
            } else if Self.isPunctuation(s) {
                if start < i { words.append(scalars[start..<i]) }
                words.append(scalars[i...i])
                start = i + 1
            }
        }
        if start < scalars.count { words.append(scalars[start...]) }
        return words
    }

    /// Greedy longest-match-first WordPiece of one word.
    func wordPiece(_ word: ArraySlice<Unicode.Scalar>, into out: inout [Int]) {
        let chars = word.map(\.value)
        if chars.count > maxInputCharactersPerWord {
            out.append(unknownID)
            return
        }
        var pieces: [Int] = []
        var start = 0
        while start < chars.count {
            var end = min(chars.count, start + maxTokenLength)
            var found: Int?
            while start < end {
                let key = start > 0 ? ScalarKey(scalars: Self.prefix + chars[start..<end])
                                    : ScalarKey(scalars: Array(chars[start..<end]))
                if let id = ids[key] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else {
                out.append(unknownID)
                return
            }
            pieces.append(id)
            start = end
        }
        out.append(contentsOf: pieces)
    }

    // MARK: - Character classes (as the tokenizers library defines them)

    /// Control characters (categories Cc, Cf, Cs, Co, Cn) other than tab, newline and return.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09, 0x0A, 0x0D: return false
        default: break
        }
        switch s.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    /// Unicode White_Space (plus tab, newline, return).
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s.value == 0x20 || s.value == 0x09 || s.value == 0x0A || s.value == 0x0D || s.properties.isWhitespace
    }

    /// ASCII punctuation (which includes symbols such as "$", "+", "<") or Unicode categories P*.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        if v < 128 { return false }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// CJK Unified Ideographs blocks (as BERT defines "Chinese characters"; not kana or hangul).
    static func isChineseCharacter(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }

    /// The WordPiece decoder's per-piece cleanup: no space before ".", "?", "!", ",", and the
    /// contraction fixes of the peer (which cannot fire on single BERT pieces, kept for fidelity).
    static func cleanup(_ piece: [UInt8]) -> [UInt8] {
        guard piece.first == 0x20 else { return piece }
        var s = piece
        for (from, to) in cleanupRules { s = replacing(s, Array(from.utf8), Array(to.utf8)) }
        return s
    }

    private static let cleanupRules: [(String, String)] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ]

    /// Replaces every non-overlapping occurrence of `from`, left to right (byte-exact).
    static func replacing(_ s: [UInt8], _ from: [UInt8], _ to: [UInt8]) -> [UInt8] {
        guard s.count >= from.count else { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            if i + from.count <= s.count && s[i..<(i + from.count)].elementsEqual(from) {
                out += to
                i += from.count
            } else {
                out.append(s[i])
                i += 1
            }
        }
        return out
    }
}
