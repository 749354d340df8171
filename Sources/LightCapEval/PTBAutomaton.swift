// The PTB tokenizer's rules compiled into one automaton, as a lexer generator compiles a
// scanner: a Thompson NFA of every rule's pattern followed by its trailing context, and a DFA
// made from it state by state as the text needs them (subset construction on demand). One run
// from a position finds the longest match over all rules and the first-listed rule among those
// that match that far: what the rule-by-rule interpreter (`PTBTokenizer.rawLines(_:
// skipKnownFailures:)`, the plain twin the tests compare against) finds by evaluating every
// rule's pattern as position sets, at the cost of one table lookup per UTF-16 unit.

import Foundation

/// The NFA of every rule, built once.
final class PTBAutomaton: Sendable {
    enum Node: Sendable {
        /// Consumes one unit of `atom`'s class.
        case unit(atom: Int32, next: Int32)
        /// Epsilon moves to each of these nodes (none: a dead end).
        case fork([Int32])
        /// The rule's pattern and context have matched.
        case accept(rule: Int32)
    }

    /// The set of units one NFA edge takes: a predicate class, or one literal unit with its
    /// ASCII case partner (`b == a` when it has none or the literal compares with case).
    struct Atom: Sendable {
        let cls: UnitClass?
        let a: UInt16
        let b: UInt16

        @inline(__always) func contains(_ u: UInt16) -> Bool {
            if let cls { return cls.contains(u) }
            return u == a || u == b
        }
    }

    static let shared = PTBAutomaton(rules: PTBRules.shared.rules)

    let nodes: [Node]
    let atoms: [Atom]
    /// One entry node per rule.
    let starts: [Int32]

    init(rules: [PTBRule]) {
        var b = Builder()
        var starts: [Int32] = []
        for (i, rule) in rules.enumerated() {
            var entry = b.add(.accept(rule: Int32(i)))
            if let context = rule.context { entry = b.build(context, next: entry) }
            starts.append(b.build(rule.pattern, next: entry))
        }
        nodes = b.nodes
        atoms = b.atoms
        self.starts = starts
    }

    /// Builds fragments back to front: each pattern's entry node leads to `next` when it has matched.
    private struct Builder {
        var nodes: [Node] = []
        var atoms: [Atom] = []

        mutating func add(_ node: Node) -> Int32 {
            nodes.append(node)
            return Int32(nodes.count - 1)
        }

        mutating func edge(_ atom: Atom, next: Int32) -> Int32 {
            atoms.append(atom)
            return add(.unit(atom: Int32(atoms.count - 1), next: next))
        }

        mutating func build(_ pattern: Pattern, next: Int32) -> Int32 {
            switch pattern {
            case .unit(let cls):
                return edge(Atom(cls: cls, a: 0, b: 0), next: next)
            case .literal(let units, let caseless):
                var entry = next
                for u in units.reversed() {
                    var partner = u
                    if caseless && u >= 65 && u <= 90 { partner = u + 32 }
                    if caseless && u >= 97 && u <= 122 { partner = u - 32 }
                    entry = edge(Atom(cls: nil, a: u, b: partner), next: entry)
                }
                return entry
            case .sequence(let parts):
                var entry = next
                for part in parts.reversed() { entry = build(part, next: entry) }
                return entry
            case .alternatives(let options):
                var entries: [Int32] = []
                for option in options { entries.append(build(option, next: next)) }
                return add(.fork(entries))
            case .repeated(let body, let lo, let hi):
                var entry: Int32
                if hi == .max {  // body*: a loop that may leave at every turn
                    let loop = add(.fork([]))
                    let inner = build(body, next: loop)
                    nodes[Int(loop)] = .fork([inner, next])
                    entry = loop
                } else {  // (body (body ...)?)?: hi - lo optional copies
                    entry = next
                    for _ in 0..<max(0, hi - lo) {
                        let inner = build(body, next: entry)
                        entry = add(.fork([inner, next]))
                    }
                }
                for _ in 0..<lo { entry = build(body, next: entry) }
                return entry
            }
        }
    }
}

/// The DFA of a `PTBAutomaton`, made on demand, and the scan of one text at a time (`begin`,
/// then `longestMatch`). The states outlive the text: `PTBScanner.take()` hands out the one
/// kept from the last call (`giveBack`), so a process makes each state once, not once per call.
struct PTBScanner {
    private let nfa: PTBAutomaton
    /// Each DFA state's NFA unit nodes (sorted) and its accepting rule (the first listed; -1: none).
    private var sets: [[Int32]] = []
    private var accepts: [Int32] = []
    private var index: [[Int32]: Int32] = [:]
    /// Transitions: ASCII units in a table (state * 128 + unit), others in a dictionary;
    /// -1 is the dead state, -2 not made yet.
    private var ascii: [Int32] = []
    private var other: [Int: Int32] = [:]
    private var start: Int32 = 0
    /// Epsilon-closure scratch: a node is visited in this pass when its mark is `pass`.
    private var marks: [UInt32]
    private var pass: UInt32 = 0
    /// `noAcceptAfter[p] == s`: from state `s` at position `p` no rule accepts any longer
    /// match (learnt from an earlier run that went on from there): a later run that reaches the
    /// same state at the same position stops, which keeps a long run of units that some rule
    /// scans to its end and then rejects linear instead of quadratic.
    private var noAcceptAfter: [Int32] = []
    private var trail: [(position: Int, state: Int32)] = []
    private var text: [UInt16] = []
    /// The DFA starts again from nothing past this many states (a bound on memory: a state holds
    /// its NFA node set and 128 ASCII transitions, a few KB).
    static let maxStates = 10_000
    /// Units stepped over in this text's runs (the tests bound it: linear in the text).
    private(set) var steps = 0

    init(_ nfa: PTBAutomaton = .shared) {
        self.nfa = nfa
        marks = [UInt32](repeating: 0, count: nfa.nodes.count)
        clearStates()
    }

    private mutating func clearStates() {
        sets = []
        accepts = []
        index = [:]
        ascii = []
        other = [:]
        start = state(closure(of: nfa.starts))
        noAcceptAfter = [Int32](repeating: -1, count: text.count + 1)
    }

    /// Starts the scan of `text`: forgets what the last text taught (`noAcceptAfter`), keeps the states.
    mutating func begin(_ text: [UInt16]) {
        self.text = text
        steps = 0
        noAcceptAfter = [Int32](repeating: -1, count: text.count + 1)
    }

    /// The longest match of any rule starting at `pos` of the text given to `begin`: its end
    /// (with the trailing context) and the first-listed rule that matches that far; nil when no
    /// rule matches a unit.
    mutating func longestMatch(at pos: Int) -> (end: Int, rule: Int)? {
        if sets.count > Self.maxStates { clearStates() }
        var s = start
        var best: (end: Int, rule: Int)? = nil
        var p = pos
        trail.removeAll(keepingCapacity: true)
        while p < text.count {
            s = step(s, text[p])
            p += 1
            steps += 1
            if s < 0 { break }
            if accepts[Int(s)] >= 0 { best = (p, Int(accepts[Int(s)])) }
            if noAcceptAfter[p] == s { break }
            trail.append((p, s))
        }
        let last = best?.end ?? pos
        for (position, state) in trail where position >= last { noAcceptAfter[position] = state }
        return best
    }

    private mutating func step(_ s: Int32, _ u: UInt16) -> Int32 {
        if u < 128 {
            let t = ascii[Int(s) * 128 + Int(u)]
            if t != -2 { return t }
        } else if let t = other[Int(s) << 16 | Int(u)] {
            return t
        }
        var seeds: [Int32] = []
        for n in sets[Int(s)] {
            if case .unit(let atom, let next) = nfa.nodes[Int(n)], nfa.atoms[Int(atom)].contains(u) { seeds.append(next) }
        }
        let t = seeds.isEmpty ? -1 : state(closure(of: seeds))
        if u < 128 { ascii[Int(s) * 128 + Int(u)] = t } else { other[Int(s) << 16 | Int(u)] = t }
        return t
    }

    /// The unit nodes reachable from `seeds` by epsilon moves, and the first rule accepting there.
    private mutating func closure(of seeds: [Int32]) -> (units: [Int32], accept: Int32) {
        pass &+= 1
        if pass == 0 {  // the marks wrapped: clear them once
            for i in marks.indices { marks[i] = 0 }
            pass = 1
        }
        var units: [Int32] = []
        var accept = Int32.max
        var stack = seeds
        while let n = stack.popLast() {
            if marks[Int(n)] == pass { continue }
            marks[Int(n)] = pass
            switch nfa.nodes[Int(n)] {
            case .unit: units.append(n)
            case .fork(let targets): stack.append(contentsOf: targets)
            case .accept(let rule): accept = min(accept, rule)
            }
        }
        units.sort()
        return (units, accept == .max ? -1 : accept)
    }

    private mutating func state(_ c: (units: [Int32], accept: Int32)) -> Int32 {
        if c.units.isEmpty && c.accept < 0 { return -1 }
        if let s = index[c.units + [c.accept]] { return s }
        let s = Int32(sets.count)
        sets.append(c.units)
        accepts.append(c.accept)
        index[c.units + [c.accept]] = s
        ascii += [Int32](repeating: -2, count: 128)
        return s
    }
}

extension PTBScanner {
    private final class Spare: @unchecked Sendable {  // `scanner` is read and written under `lock`
        let lock = NSLock()
        var scanner: PTBScanner?
    }

    private static let spare = Spare()

    /// The scanner the last call gave back (its states already made), or a new one when another
    /// thread holds it.
    static func take() -> PTBScanner {
        spare.lock.withLock {
            defer { spare.scanner = nil }
            return spare.scanner
        } ?? PTBScanner()
    }

    /// Keeps `scanner`'s states for the next call (not its text).
    static func giveBack(_ scanner: PTBScanner) {
        var kept = scanner
        kept.begin([])
        spare.lock.withLock { spare.scanner = kept }
    }
}
