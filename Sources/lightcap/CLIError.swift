// Errors of the command line, each naming the file or flag at fault.

/// An error of the command line (the engine's own are `LightCapError`s).
enum CLIError: Error, CustomStringConvertible {
    case unreadableFile(String, String)
    case noSuchPath(String)
    case noImages([String])
    case modelNotFound(String)
    case badUse(String)

    var description: String {
        switch self {
        case .unreadableFile(let p, let r): return "cannot read \(p): \(r)"
        case .noSuchPath(let p): return "no such file or directory: \(p)"
        case .noImages(let p): return "no images found in \(p.joined(separator: ", "))"
        case .modelNotFound(let p):
            return "no model directory at \(p) (it needs config.json, model.safetensors, vocab.txt, concepts.txt); pass --model DIR or set LIGHTCAP_MODEL"
        case .badUse(let m): return m
        }
    }
}
