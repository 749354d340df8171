// Fuzzes the PTB tokenizer of the caption metrics: the input as one document (rawLines, the
// compiled automaton), checked against the plain twin that tries every rule at every position
// (plainRawLines) on inputs of up to 64 bytes (it is quadratic or worse on long hostile runs),
// and as captions, one a line (tokenize, which must give one output per caption).
import Foundation
import FuzzSupport
@testable import LightCapEval

let tokenizer = PTBTokenizer()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPTB(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let text = String(decoding: Fuzz.data(start, count), as: UTF8.self)
    let lines = tokenizer.rawLines(text)
    if count <= 64 {
        precondition(lines == tokenizer.plainRawLines(text), "the automaton and the plain scanner disagree")
    }
    let captions = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let tokenized = tokenizer.tokenize(captions)
    precondition(tokenized.count == captions.count, "tokenize lost or added a caption")
    return 0
}
