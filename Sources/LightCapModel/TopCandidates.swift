// TopCandidates: the k best (score, flat index) pairs of a stream, best first; beam search's
// selection of 2 x beam candidates over every hypothesis' vocabulary row, and the INT8 decoder's
// k largest approximate logits. `offer(_:)` takes one candidate (the plain twin); `offer(row:)`
// takes a whole row and skips every block of 16 values none of which can enter: the same items.

/// The `count` best (score, flat index) pairs seen, best first: higher score, then lower index.
package struct TopCandidates {
    package let count: Int
    package private(set) var items: [(score: Float, flat: Int)] = []

    package init(count: Int) {
        self.count = count
        items.reserveCapacity(count + 1)
    }

    @inline(__always)
    static func better(_ a: (score: Float, flat: Int), _ b: (score: Float, flat: Int)) -> Bool {
        a.score != b.score ? a.score > b.score : a.flat < b.flat
    }

    /// Offers one candidate.
    @inline(__always)
    package mutating func offer(_ c: (score: Float, flat: Int)) {
        if items.count == count, let last = items.last, !Self.better(c, last) { return }
        var i = items.count
        while i > 0 && Self.better(c, items[i - 1]) { i -= 1 }
        items.insert(c, at: i)
        if items.count > count { items.removeLast() }
    }

    /// Offers `base + (row[j] - shift)` at flat index `flatOffset + j` for every j in order, as
    /// `offer(_:)` one by one would. Once the list is full, a later candidate enters only with a
    /// score above the last item's (its flat index is higher), and the score is non-decreasing in
    /// row[j] (rounding is monotone): with `cut` a value whose score does not exceed the last
    /// item's, every value <= cut is out, and a block of 16 such values is skipped whole. Without
    /// finite base, shift and last score, every value goes through `offer(_:)`.
    package mutating func offer(row: UnsafeBufferPointer<Float>, base: Float = 0, shift: Float = 0, flatOffset: Int = 0) {
        guard count > 0 else { return }
        let n = row.count
        var j = 0
        while j < n && items.count < count {
            offer((base + (row[j] - shift), flatOffset + j))
            j += 1
        }
        guard base.isFinite && shift.isFinite else {
            while j < n { offer((base + (row[j] - shift), flatOffset + j)); j += 1 }
            return
        }
        var cut = Self.cut(worst: items.last?.score ?? .infinity, base: base, shift: shift)
        while j + 16 <= n {
            if all(FastMath.lanes(row, j) .<= cut) {
                j += 16
                continue
            }
            for i in j..<(j + 16) {
                let worst = items[count - 1].score
                offer((base + (row[i] - shift), flatOffset + i))
                if items[count - 1].score != worst { cut = Self.cut(worst: items[count - 1].score, base: base, shift: shift) }
            }
            j += 16
        }
        while j < n { offer((base + (row[j] - shift), flatOffset + j)); j += 1 }
    }

    /// A value x with base + (x - shift) <= worst (so every value <= x has it too), as large as a
    /// few steps down from the inverse find; -inf when worst is not finite (nothing is skipped
    /// but -inf itself, whose score is -inf with finite base and shift).
    static func cut(worst: Float, base: Float, shift: Float) -> Float {
        guard worst.isFinite else { return -.infinity }
        var x = (worst - base) + shift
        for _ in 0..<64 {
            guard x.isFinite else { return -.infinity }
            if base + (x - shift) <= worst { return x }
            x = x.nextDown
        }
        return -.infinity
    }
}
