// Fuzzes the PTB tokenizer of the caption metrics: the input as one document (rawLines) and as
// captions, one a line (tokenize, which must give one output per caption).
import Foundation
import FuzzSupport
import LightCapEval

let tokenizer = PTBTokenizer()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPTB(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let text = String(decoding: Fuzz.data(start, count), as: UTF8.self)
    _ = tokenizer.rawLines(text)
    let captions = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let tokenized = tokenizer.tokenize(captions)
    precondition(tokenized.count == captions.count, "tokenize lost or added a caption")
    return 0
}
