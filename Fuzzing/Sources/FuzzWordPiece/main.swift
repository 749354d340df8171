// Fuzzes WordPiece over the default model's vocabulary: the input as text (tokenize, encode, the
// caption decoding of the ids it gives) and as token ids (decode, decodeCaption; ids out of range
// included), then the caption text cleanup on the raw input.
import Foundation
import FuzzSupport
import LightCapText

let tokenizer: WordPieceTokenizer = {
    do {
        return try WordPieceTokenizer(vocabURL: Fuzz.defaultModel.appendingPathComponent("vocab.txt"))
    } catch {
        fatalError("cannot read the default model's vocab.txt: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWordPiece(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let data = Fuzz.data(start, count)
    let text = String(decoding: data, as: UTF8.self)
    let tokens = tokenizer.tokenize(text)
    let ids = tokenizer.encode(text)
    precondition(tokens.count == ids.count, "tokenize and encode disagree")
    precondition(ids.allSatisfy { tokenizer.token(of: $0) != nil }, "encode gave an id outside the vocabulary")
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: false)
    _ = tokenizer.decodeCaption(ids)
    // The bytes as little-endian 16-bit ids, signed, so that negative and too-large ids occur.
    let raw = stride(from: 0, to: data.count - 1, by: 2).map { Int(Int16(bitPattern: UInt16(data[$0]) | UInt16(data[$0 + 1]) << 8)) }
    _ = tokenizer.decode(raw)
    _ = tokenizer.decodeCaption(raw)
    _ = WordPieceTokenizer.captionText(text)
    return 0
}
