// A small longest-match pattern engine over UTF-16 code units, the way a JFlex scanner sees
// its input (Java chars; a character outside the Basic Multilingual Plane is two units).
//
// A `Pattern` is built in Swift (no pattern strings to parse) and evaluated as a set of
// positions: `ends(from:)` returns every position where a match that starts at the given
// position can end. A scanner takes the longest of those, which is what a lexer generator's
// automaton does (and what a backtracking regex engine does not).

/// A set of UTF-16 code units, decided by a predicate.
struct UnitClass: Sendable {
    let contains: @Sendable (UInt16) -> Bool

    init(_ contains: @escaping @Sendable (UInt16) -> Bool) { self.contains = contains }

    /// The listed characters (each must be one UTF-16 unit).
    static func any(of characters: String) -> UnitClass {
        let units = Set(characters.utf16)
        return UnitClass { units.contains($0) }
    }

    /// Inclusive ranges of code units.
    static func ranges(_ ranges: [ClosedRange<UInt16>]) -> UnitClass {
        UnitClass { u in ranges.contains { $0.contains(u) } }
    }

    static func | (a: UnitClass, b: UnitClass) -> UnitClass {
        UnitClass { a.contains($0) || b.contains($0) }
    }

    /// Every unit not in this class.
    var inverted: UnitClass { let c = contains; return UnitClass { !c($0) } }

    /// Every unit: `[^]`.
    static let all = UnitClass { _ in true }
}

/// A pattern over UTF-16 code units.
indirect enum Pattern: Sendable {
    case unit(UnitClass)
    /// A literal; `caseless` compares ASCII letters without case (JFlex `%caseless` applies to
    /// literals, never to character classes).
    case literal([UInt16], caseless: Bool)
    case sequence([Pattern])
    case alternatives([Pattern])
    case repeated(Pattern, min: Int, max: Int)

    // MARK: building

    static func lit(_ s: String) -> Pattern { .literal(Array(s.utf16), caseless: true) }
    /// A literal compared with case.
    static func exact(_ s: String) -> Pattern { .literal(Array(s.utf16), caseless: false) }
    static func chars(_ s: String) -> Pattern { .unit(.any(of: s)) }
    static func seq(_ p: Pattern...) -> Pattern { .sequence(p) }
    static func alt(_ p: Pattern...) -> Pattern { .alternatives(p) }
    /// Alternatives of caseless literals.
    static func words(_ list: [String]) -> Pattern { .alternatives(list.map { .lit($0) }) }

    var star: Pattern { .repeated(self, min: 0, max: .max) }
    var plus: Pattern { .repeated(self, min: 1, max: .max) }
    var opt: Pattern { .repeated(self, min: 0, max: 1) }
    func times(_ lo: Int, _ hi: Int) -> Pattern { .repeated(self, min: lo, max: hi) }

    // MARK: matching

    /// Every end position of a match of this pattern starting at one of `starts` (sorted, unique).
    func ends(_ text: [UInt16], from starts: [Int]) -> [Int] {
        if starts.isEmpty { return [] }
        switch self {
        case .unit(let cls):
            var out: [Int] = []
            for s in starts where s < text.count && cls.contains(text[s]) { out.append(s + 1) }
            return out
        case .literal(let lit, let caseless):
            var out: [Int] = []
            for s in starts where s + lit.count <= text.count {
                var ok = true
                for (i, c) in lit.enumerated() {
                    let t = text[s + i]
                    if t == c { continue }
                    if caseless, Pattern.foldASCII(t) == Pattern.foldASCII(c) { continue }
                    ok = false
                    break
                }
                if ok { out.append(s + lit.count) }
            }
            return out
        case .sequence(let parts):
            var cur = starts
            for p in parts {
                cur = p.ends(text, from: cur)
                if cur.isEmpty { return [] }
            }
            return cur
        case .alternatives(let options):
            var all: [Int] = []
            for p in options { all += p.ends(text, from: starts) }
            return Pattern.sortedUnique(all)
        case .repeated(let p, let lo, let hi):
            var reached: [Int] = lo == 0 ? starts : []
            var seen = Set(reached)  // membership in constant time: a long run stays linear
            var cur = starts
            var count = 0
            while !cur.isEmpty && count < hi {
                cur = p.ends(text, from: cur)
                count += 1
                if count >= lo {
                    // A position reached again with a higher count can do no more than before.
                    cur = cur.filter { seen.insert($0).inserted }
                    reached += cur
                }
            }
            return Pattern.sortedUnique(reached)
        }
    }

    /// The longest match starting at `start`, as its end position, or nil.
    func longest(_ text: [UInt16], at start: Int) -> Int? {
        ends(text, from: [start]).last
    }

    /// Position sets are small: sorting beats hashing.
    private static func sortedUnique(_ x: [Int]) -> [Int] {
        if x.count < 2 { return x }
        let s = x.sorted()
        var out = [s[0]]
        for v in s.dropFirst() where v != out[out.count - 1] { out.append(v) }
        return out
    }

    private static func foldASCII(_ u: UInt16) -> UInt16 {
        (u >= 65 && u <= 90) ? u + 32 : u
    }
}

// MARK: Java's character classes (as a JFlex scanner generated with %unicode sees them)

enum JavaChar {
    /// The Unicode scalar of a BMP unit; nil for a surrogate half.
    @inline(__always) static func scalar(_ u: UInt16) -> Unicode.Scalar? { Unicode.Scalar(UInt32(u)) }

    /// `[:letter:]`: Java's `Character.isLetter` (categories Lu, Ll, Lt, Lm, Lo).
    static let letter = UnitClass { u in
        if u < 128 { return (u >= 65 && u <= 90) || (u >= 97 && u <= 122) }
        guard let s = scalar(u) else { return false }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// `[:digit:]`: Java's `Character.isDigit` (category Nd).
    static let digit = UnitClass { u in
        if u < 128 { return u >= 48 && u <= 57 }
        guard let s = scalar(u) else { return false }
        return s.properties.generalCategory == .decimalNumber
    }

    /// `[:uppercase:]`: Java's `Character.isUpperCase` (category Lu).
    static let uppercase = UnitClass { u in
        if u < 128 { return u >= 65 && u <= 90 }
        guard let s = scalar(u) else { return false }
        return s.properties.generalCategory == .uppercaseLetter
    }

    static let asciiLetter = UnitClass { u in (u >= 65 && u <= 90) || (u >= 97 && u <= 122) }
    static let asciiDigit = UnitClass { u in u >= 48 && u <= 57 }
    static let asciiAlnum = asciiLetter | asciiDigit
}

// MARK: Java's String.toLowerCase(Locale.ENGLISH)

extension String {
    /// Lowercases as Java's `String.toLowerCase(Locale.ENGLISH)` does: full Unicode lowercase
    /// mappings, and a capital sigma at the end of a word becomes the final sigma.
    func javaLowercased() -> String {
        if self.utf8.allSatisfy({ $0 < 128 }) { return self.lowercased() }
        let scalars = Array(self.unicodeScalars)
        var out = String.UnicodeScalarView()
        for (i, s) in scalars.enumerated() {
            if s.value == 0x03A3 {
                out.append(Self.isFinalSigma(scalars, i) ? "\u{03C2}" : "\u{03C3}")
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(out)
    }

    /// Java decides within the word around the sigma (its word-break iterator: letters, digits,
    /// marks, connectors and the in-word marks - ' . ’): final when a cased letter precedes it
    /// in the word and none follows it.
    private static func isFinalSigma(_ s: [Unicode.Scalar], _ i: Int) -> Bool {
        func inWord(_ c: Unicode.Scalar) -> Bool {
            if "-'.\u{2019}".unicodeScalars.contains(c) { return true }
            if c.properties.isIdeographic { return false }  // each ideograph is a word of its own
            switch c.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
                 .decimalNumber, .nonspacingMark, .spacingMark, .enclosingMark, .connectorPunctuation:
                return true
            default:
                return false
            }
        }
        var j = i - 1
        var casedBefore = false
        while j >= 0 && inWord(s[j]) {
            if s[j].properties.isCased { casedBefore = true; break }
            j -= 1
        }
        guard casedBefore else { return false }
        var k = i + 1
        while k < s.count && inWord(s[k]) {
            if s[k].properties.isCased { return false }
            k += 1
        }
        return true
    }
}
