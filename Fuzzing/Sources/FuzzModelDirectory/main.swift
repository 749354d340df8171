// Fuzzes the model directory loader: the input is cut into config.json, model.safetensors,
// vocab.txt and concepts.txt (Fuzz.separator between them; a file after the last part is absent),
// then the directory is opened piece by piece (configuration, both vocabulary readers, concept
// names, every tensor through a strict store) and as a whole by Captioner(modelDirectory:), which
// checks every tensor's shape against the configuration.
import Foundation
import FuzzSupport
import LightCap
import LightCapCore
import LightCapText

let names = ["config.json", "model.safetensors", "vocab.txt", "concepts.txt"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelDirectory(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let parts = Fuzz.split(Fuzz.data(start, count), limit: names.count)
    for (i, name) in names.enumerated() {
        if i < parts.count { _ = Fuzz.file(name, parts[i]) } else { Fuzz.remove(name) }
    }
    do {
        let directory = try ModelDirectory(url: Fuzz.scratch)
        let vocabulary = try directory.vocabulary()
        _ = try directory.conceptNames()
        do {
            let tokenizer = try WordPieceTokenizer(vocabURL: directory.vocabURL,
                                                   doLowerCase: directory.configuration.tokenizer.doLowerCase)
            precondition(tokenizer.count == vocabulary.count || vocabulary.contains { $0.contains("\r") },
                         "the two vocabulary readers disagree")
            _ = tokenizer.decodeCaption(tokenizer.encode("a small red circle"))
        } catch {
            Fuzz.expectTyped(error, [TextError.self], "vocab.txt")
        }
        let store = try directory.weightStore()
        for key in store.keys where store.file.entries[key]?.dtype != .i64 {
            _ = try? store.take(key)
        }
    } catch {
        Fuzz.expectTyped(error, [LightCapError.self], "model directory")
    }
    do {
        _ = try Captioner(modelDirectory: Fuzz.scratch)
    } catch {
        Fuzz.expectTyped(error, [LightCapError.self, TextError.self], "Captioner(modelDirectory:)")
    }
    return 0
}
