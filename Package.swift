// swift-tools-version: 6.0
// LightCap: an on-device image captioner (Wang et al., "Efficient Image Captioning for Edge Devices").
import PackageDescription

let package = Package(
    name: "LightCap",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "LightCap", targets: ["LightCap"]),
        .library(name: "LightCapEval", targets: ["LightCapEval"]),
        .executable(name: "lightcap", targets: ["lightcap"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries from Debian (see scripts/setup.sh).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CSPNG", path: "Sources/CSPNG", pkgConfig: "spng", providers: [.apt(["libspng-dev"])]),
        .systemLibrary(name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp", providers: [.apt(["libwebp-dev"])]),

        // Tensor, safetensors, weight store, configuration, kernels (oneDNN + plain reference twins).
        .target(name: "LightCapCore", dependencies: ["CDNNL"]),
        // WordPiece tokenizer / detokenizer.
        .target(name: "LightCapText"),
        // The network: CLIPResNet, ConceptExtractor, Modulator, FusionModel, Heads.
        .target(name: "LightCapModel", dependencies: ["LightCapCore", "LightCapText"]),
        // Image decoding, EXIF orientation, resize, CLIP preprocessing.
        .target(name: "LightCapImage", dependencies: ["CTurboJPEG", "CSPNG", "CWebP"]),
        // Captioner (shared, read-only) + per-request state and decoding.
        .target(name: "LightCap", dependencies: ["LightCapCore", "LightCapModel", "LightCapText", "LightCapImage"]),
        // Caption metrics: PTB tokenizer, BLEU, ROUGE-L, CIDEr-D.
        .target(name: "LightCapEval"),
        // The command line.
        .executableTarget(name: "lightcap", dependencies: [
            "LightCap", "LightCapEval",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Decode + preprocess timings (scripts/bench_image.py compares them with Pillow).
        .executableTarget(name: "lightcap-image-bench", dependencies: ["LightCapImage"]),

        .testTarget(name: "LightCapCoreTests", dependencies: ["LightCapCore"]),
        .testTarget(name: "LightCapTextTests", dependencies: ["LightCapText"]),
        .testTarget(name: "LightCapModelTests", dependencies: ["LightCapModel", "LightCapCore"]),
        .testTarget(name: "LightCapImageTests", dependencies: ["LightCapImage"]),
        .testTarget(name: "LightCapTests", dependencies: ["LightCap"]),
        .testTarget(name: "LightCapEvalTests", dependencies: ["LightCapEval"]),
    ]
)
