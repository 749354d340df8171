// swift-tools-version: 6.0
// LightCap's libFuzzer targets (docs/FUZZING.md). A package of its own, so that the root package's
// `swift build` never needs the sanitizers. Build and run them all with `scripts/fuzz.sh`; the
// flags they need (`-sanitize=fuzzer,address -parse-as-library -enable-testing`) are given there,
// on the command line, so that they reach the engine's modules too (coverage feedback and ASan
// checks inside the parsers, `@testable import` of their internal entry points).
import PackageDescription

/// The root package's identity: SwiftPM names a path dependency after its directory (the checkout's
/// name, whatever it is), in lower case.
let root = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "lightcap").lowercased()

/// One libFuzzer target: an executable whose `LLVMFuzzerTestOneInput` drives one parser.
func fuzzer(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzSupport"] + dependencies)
}

let package = Package(
    name: "LightCapFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        // The request target builds Hummingbird's `Request`; the root package resolves the same version.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        // What every target shares: scratch files, the input splitter, the repository's root.
        .target(name: "FuzzSupport"),
        // The safetensors reader and the strict weight store.
        fuzzer("FuzzSafetensors", [.product(name: "LightCap", package: root)]),
        // config.json (Configuration.decode and validate).
        fuzzer("FuzzConfiguration", [.product(name: "LightCap", package: root)]),
        // A model directory made of the input's parts: config.json, model.safetensors, vocab.txt, concepts.txt.
        fuzzer("FuzzModelDirectory", [.product(name: "LightCap", package: root)]),
        // ImageDecoder.decode: sniffing, JPEG / PNG (fast path and libspng) / WebP, EXIF, limits.
        fuzzer("FuzzImage", [.product(name: "LightCap", package: root)]),
        // WordPiece tokenize / encode / decode over the default model's vocabulary.
        fuzzer("FuzzWordPiece", [.product(name: "LightCap", package: root)]),
        // The PTB tokenizer of the caption metrics.
        fuzzer("FuzzPTB", [.product(name: "LightCapEval", package: root)]),
        // COCO annotation and results files, then the metrics on what they hold.
        fuzzer("FuzzCOCO", [.product(name: "LightCapEval", package: root)]),
        // The caption handler's request parsing: query, content type, multipart / JSON / raw bodies.
        fuzzer("FuzzRequest", [
            .product(name: "LightCapServer", package: root), .product(name: "LightCap", package: root),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
    ],
    // The targets are glue around synchronous C callbacks; the engine's own modules keep Swift 6.
    swiftLanguageModes: [.v5]
)
