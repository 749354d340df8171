// lightcap-image-bench FILE... [--size S] [--iterations N]: LightCapImage decode + CLIP preprocessing
// timings as JSON lines (driven by scripts/bench_image.py, which times Pillow in the same run).
import Foundation
import LightCapImage

var files: [String] = []
var size = 224, iterations = 20
var args = CommandLine.arguments.dropFirst().makeIterator()
while let a = args.next() {
    switch a {
    case "--size": size = Int(args.next() ?? "") ?? size
    case "--iterations": iterations = Int(args.next() ?? "") ?? iterations
    default: files.append(a)
    }
}
if files.isEmpty {
    FileHandle.standardError.write(Data("usage: lightcap-image-bench FILE... [--size S] [--iterations N]\n".utf8))
    exit(2)
}
let encoder = JSONEncoder()
encoder.outputFormatting = .sortedKeys
for f in files {
    do {
        let r = try ImageBenchmark.run(file: URL(fileURLWithPath: f), size: size, iterations: iterations)
        print(String(decoding: try encoder.encode(r), as: UTF8.self))
    } catch {
        FileHandle.standardError.write(Data("\(f): \(error)\n".utf8))
        exit(1)
    }
}
