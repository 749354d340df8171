// The caption tokenizer of the COCO caption evaluation (pycocoevalcap 1.2).
//
// pycocoevalcap joins every caption of a set with "\n", runs Stanford CoreNLP 3.4.1's
// `PTBTokenizer -preserveLines -lowerCase` (Java) over the whole text, splits the output into
// lines again and drops the tokens in `punctuation`. This file reproduces that tokenizer's
// behaviour on caption text in Swift: the token classes of its scanner (words, clitics
// such as can't -> ca n't, numbers, fractions, abbreviations and acronyms, URLs, quotes,
// brackets -> -lrb- ..., dashes, ellipses, symbols), longest match with the first listed class
// winning ties, trailing context, and the deletion of characters it cannot tokenize (such as
// emoji). Because the scanner sees the text as one document, a caption's tokens can depend on
// the first characters of the next caption; `tokenize(_:)` therefore takes a whole set.
// Expected outputs come from the Java tokenizer itself (python/lightcap_train/metric_cases.py).

import Foundation

/// The PTB tokenizer of the COCO caption evaluation, in Swift.
public struct PTBTokenizer: Sendable {
    /// The tokens pycocoevalcap removes after tokenizing (after lowercasing, so "-LRB-" is
    /// never removed: pycocoevalcap keeps "-lrb-").
    public static let punctuation: Set<String> = [
        "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
        ".", "?", "!", ",", ":", "-", "--", "...", ";",
    ]

    public init() {}

    /// Tokenizes captions as pycocoevalcap does: returns, for each caption in order, its
    /// tokens lowercased, punctuation dropped, joined by single spaces. Newlines inside a
    /// caption become spaces first. (pycocoevalcap's known quirk is kept: a carriage return,
    /// U+2028/U+2029, a vertical tab or form feed inside a caption starts a new output line,
    /// which shifts the captions after it.)
    public func tokenize(_ captions: [String]) -> [String] {
        // Scalar by scalar: a String compares "\r\n" as one Character, Python replaces the "\n" in it.
        let document = captions.map { caption in
            String(String.UnicodeScalarView(caption.unicodeScalars.map { $0 == "\n" ? " " : $0 }))
        }.joined(separator: "\n")
        let lines = rawLines(document)
        return (0..<captions.count).map { i in
            guard i < lines.count else { return "" }
            // pycocoevalcap: ' '.join(w for w in line.rstrip().split(' ') if w not in PUNCTUATIONS)
            var line = Substring(lines[i].joined(separator: " "))
            while let last = line.unicodeScalars.last, String.isPythonSpace(last) {
                line = Substring(line.unicodeScalars.dropLast())
            }
            return line.split(separator: " ", omittingEmptySubsequences: false)
                .filter { !Self.punctuation.contains(String($0)) }.joined(separator: " ")
        }
    }

    /// The tokenizer's output for a document: one array of lowercased tokens per output line
    /// (before pycocoevalcap drops punctuation).
    public func rawLines(_ document: String) -> [[String]] {
        scan(document, automaton: true)
    }

    /// The same by the plain twin: every rule's pattern evaluated in turn at each position
    /// (`Pattern.ends`, position sets), the longest match winning and the first listed on a tie.
    func plainRawLines(_ document: String) -> [[String]] {
        scan(document, automaton: false)
    }

    private func scan(_ document: String, automaton useAutomaton: Bool) -> [[String]] {
        let text = Array(document.utf16)
        var lines: [[String]] = [[]]
        var candidates: [UInt16: [Int]] = [:]
        let rules = PTBRules.shared.rules
        let asciiCandidates = PTBRules.shared.asciiCandidates
        var dfa: PTBScanner? = nil
        if useAutomaton {
            dfa = PTBScanner.take()
            dfa!.begin(text)
        }
        defer { if let dfa { PTBScanner.giveBack(dfa) } }
        var pos = 0

        /// The rules' longest match at `pos` (first listed on a tie), tried one by one.
        func ruleByRule() -> (rule: Int, end: Int)? {
            let u = text[pos]
            let ruleIndices: [Int]
            if u < 128 {
                ruleIndices = asciiCandidates[Int(u)]
            } else if let c = candidates[u] {
                ruleIndices = c
            } else {
                ruleIndices = rules.indices.filter { rules[$0].canStart(u) }
                candidates[u] = ruleIndices
            }
            var best: (total: Int, rule: Int, end: Int)? = nil
            for i in ruleIndices {
                guard let (end, total) = rules[i].match(text, at: pos) else { continue }
                // Longest match wins; on a tie the rule listed first.
                if best == nil || total - pos > best!.total { best = (total - pos, i, end) }
            }
            return best.map { ($0.rule, $0.end) }
        }

        /// The automaton's longest match at `pos`; a rule with trailing context then finds where
        /// its token ends within that match (the longest token whose context reaches as far).
        func automaton() -> (rule: Int, end: Int)? {
            guard let (total, i) = dfa!.longestMatch(at: pos) else { return nil }
            guard rules[i].context != nil else { return (i, total) }
            guard let (end, ruleTotal) = rules[i].match(text, at: pos), ruleTotal == total else {
                assertionFailure("PTB automaton and rule \(i) disagree at \(pos)")
                return ruleByRule()
            }
            return (i, end)
        }

        while pos < text.count {
            if let end = Self.plainWordEnd(text, pos) {
                lines[lines.count - 1].append(String(decoding: text[pos..<end], as: UTF16.self).lowercased())
                pos = end
                continue
            }
            guard let match = useAutomaton ? automaton() : ruleByRule() else {
                pos += 1  // untokenizable: deleted (CoreNLP's default "firstDelete")
                continue
            }
            let tokenText = String(decoding: text[pos..<match.end], as: UTF16.self)
            let result = rules[match.rule].action(tokenText)
            switch result {
            case .token(let t, let pushBack):
                lines[lines.count - 1].append(t.javaLowercased())
                pos = match.end - pushBack
            case .skip:
                pos = match.end
            case .newline:
                lines.append([])
                pos = match.end
            }
        }
        return lines
    }
}

extension PTBTokenizer {
    /// The fast path for the most common token: ASCII letters followed by a space, a tab, a
    /// line feed or the end. Every rule gives such a word as it is (a longer match, such as a
    /// one-letter acronym with its trailing space, still yields the same token), except the
    /// assimilations that are split (cannot, gonna, ...). Returns the word's end, or nil.
    @inline(__always)
    static func plainWordEnd(_ text: [UInt16], _ pos: Int) -> Int? {
        var end = pos
        while end < text.count {
            let c = text[end] | 0x20
            guard c >= 97 && c <= 122 else { break }
            end += 1
        }
        guard end > pos else { return nil }
        if end < text.count {
            let next = text[end]
            guard next == 32 || next == 9 || next == 10 else { return nil }
        }
        let n = end - pos
        if n == 5 || n == 6 {
            let w = String(decoding: text[pos..<end], as: UTF16.self).lowercased()
            if ["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"].contains(w) { return nil }
        }
        return end
    }
}

// MARK: - Python's whitespace splitting (the metrics split tokenized captions with it)

extension String {
    /// Python's `str.split()`: splits on runs of Unicode whitespace, dropping empty pieces.
    func pythonSplit() -> [String] {
        var words: [String] = []
        var current = String.UnicodeScalarView()
        for s in unicodeScalars {
            if Self.isPythonSpace(s) {
                if !current.isEmpty { words.append(String(current)); current = .init() }
            } else {
                current.append(s)
            }
        }
        if !current.isEmpty { words.append(String(current)) }
        return words
    }

    static func isPythonSpace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }
}

// MARK: - Rules

/// What a rule does with the text it matched.
enum PTBAction: Sendable {
    /// Emit a token; `pushBack` units at the end of the match are scanned again.
    case token(String, pushBack: Int)
    case skip
    case newline
}

struct PTBRule: Sendable {
    let pattern: Pattern
    /// Trailing context (`r/s`): must follow the match, is not part of it, but counts in the
    /// longest-match comparison.
    let context: Pattern?
    let action: @Sendable (String) -> PTBAction

    func canStart(_ u: UInt16) -> Bool {
        pattern.canStart(u) || (pattern.isNullable && (context?.canStart(u) ?? false))
    }

    /// The end of the token and the end of the whole match (with trailing context).
    func match(_ text: [UInt16], at pos: Int) -> (end: Int, total: Int)? {
        let ends = pattern.ends(text, from: [pos])
        guard let context else {
            guard let e = ends.last, e > pos else { return nil }
            return (e, e)
        }
        var best: (Int, Int)? = nil
        for e in ends.reversed() {
            guard let t = context.longest(text, at: e), t > pos else { continue }
            if best == nil || t > best!.1 { best = (e, t) }
        }
        return best
    }
}

extension Pattern {
    var isNullable: Bool {
        switch self {
        case .unit: return false
        case .literal(let l, _): return l.isEmpty
        case .sequence(let p): return p.allSatisfy(\.isNullable)
        case .alternatives(let p): return p.contains(where: \.isNullable)
        case .repeated(let p, let lo, _): return lo == 0 || p.isNullable
        }
    }

    /// Whether a match can begin with the unit `u`.
    func canStart(_ u: UInt16) -> Bool {
        switch self {
        case .unit(let c): return c.contains(u)
        case .literal(let l, let caseless):
            guard let f = l.first else { return false }
            if f == u { return true }
            return caseless && Pattern.lit(String(decoding: [f], as: UTF16.self)).longest([u], at: 0) != nil
        case .sequence(let parts):
            for p in parts {
                if p.canStart(u) { return true }
                if !p.isNullable { return false }
            }
            return false
        case .alternatives(let p): return p.contains { $0.canStart(u) }
        case .repeated(let p, _, let hi): return hi > 0 && p.canStart(u)
        }
    }
}
