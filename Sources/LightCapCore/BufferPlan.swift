// BufferPlan: which of a few reused buffers each activation of a ConvolutionNetwork lives in.

extension ConvolutionNetwork {
    /// The buffer slot of every value: a value's buffer is freed after its last use and reused
    /// by a later value (the smallest free one it fits, else the largest free one, grown); a
    /// convolution adding a residual writes into the residual's buffer (the output value is an
    /// alias of it). The network's input has no slot: it is the caller's memory.
    struct BufferPlan {
        /// Buffer slot of each value (-1: the caller's input).
        let slots: [Int]
        /// Bytes of each slot (the largest value it holds).
        let slotBytes: [Int]

        /// The plan for `ops` over `values`, `output` read after the last op. Throws when a
        /// residual is read after the convolution that adds it (its buffer holds the sum).
        init(ops: [Op], values: [ValueInfo], output: Value) throws {
            // Last use of each value.
            var lastUse = [Int](repeating: -1, count: values.count)
            for (i, op) in ops.enumerated() {
                lastUse[op.input.index] = i
                if let r = op.residual { lastUse[r.index] = i }
            }
            lastUse[output.index] = ops.count
            for (i, op) in ops.enumerated() {
                if let r = op.residual, lastUse[r.index] != i {
                    throw LightCapError.invalidArgument(reason: "a residual value is used after the convolution that adds it (\(op.label))")
                }
            }
            // Buffer slots: reuse freed buffers, best fit.
            var slots = [Int](repeating: -1, count: values.count)
            var slotBytes: [Int] = []
            var free: [Int] = []
            for (i, op) in ops.enumerated() {
                let out = op.output.index
                if let a = values[out].alias {
                    slots[out] = slots[a]
                } else {
                    let need = DNNL.bytes(values[out].desc)
                    let fits = free.filter { slotBytes[$0] >= need }.min { slotBytes[$0] < slotBytes[$1] }
                    if let s = fits ?? free.max(by: { slotBytes[$0] < slotBytes[$1] }) {
                        free.removeAll { $0 == s }
                        slotBytes[s] = max(slotBytes[s], need)
                        slots[out] = s
                    } else {
                        slotBytes.append(need)
                        slots[out] = slotBytes.count - 1
                    }
                }
                var inputs = [op.input.index]
                if let r = op.residual { inputs.append(r.index) }
                for v in inputs where lastUse[v] == i && slots[v] >= 0 && slots[v] != slots[out] && !free.contains(slots[v]) {
                    free.append(slots[v])
                }
            }
            self.slots = slots
            self.slotBytes = slotBytes
        }
    }
}
