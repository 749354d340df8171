// swift-tools-version: 6.0
// LightCap: an on-device image captioner (Wang et al., "Efficient Image Captioning for Edge Devices").
import PackageDescription

let package = Package(
    name: "LightCap",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "LightCap", targets: ["LightCap"]),
        .library(name: "LightCapEval", targets: ["LightCapEval"]),
        .library(name: "LightCapServer", targets: ["LightCapServer"]),
        .executable(name: "lightcap", targets: ["lightcap"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The HTTP service (LightCapServer) only; nothing else depends on it.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // Graceful shutdown (the service's draining state) and header names; Hummingbird uses both.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        // The Prometheus text format of GET /metrics.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.3.0"),
    ],
    targets: [
        // System libraries from Debian (see scripts/setup.sh).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CSPNG", path: "Sources/CSPNG", pkgConfig: "spng", providers: [.apt(["libspng-dev"])]),
        .systemLibrary(name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp", providers: [.apt(["libwebp-dev"])]),
        // Whole-buffer inflate for the fast PNG path (8-bit RGB/RGBA); libspng does everything else.
        .systemLibrary(name: "CDeflate", path: "Sources/CDeflate", pkgConfig: "libdeflate",
                       providers: [.apt(["libdeflate-dev"])]),

        // Whole-file reads that never hand Foundation an empty file (FileContents), for every reader.
        .target(name: "LightCapFiles"),
        // Tensor, safetensors, weight store, configuration, kernels (oneDNN + LightCap's own).
        .target(name: "LightCapCore", dependencies: ["CDNNL", "CKernels", "LightCapFiles"]),
        // LightCap's own kernels: Winograd F(4x4)/F(2x2) transforms and products, the direct convolution
        // for small outputs (AVX2+FMA or generic, chosen at run time).
        .target(name: "CKernels"),
        // WordPiece tokenizer / detokenizer.
        .target(name: "LightCapText", dependencies: ["LightCapFiles"]),
        // The network: CLIPResNet, ConceptExtractor, Modulator, FusionModel, Heads. Works on token ids
        // only; the tokenizer (LightCapText) is the Captioner's.
        .target(name: "LightCapModel", dependencies: ["LightCapCore"]),
        // Image decoding, EXIF orientation, resize, CLIP preprocessing.
        .target(name: "LightCapImage", dependencies: ["CTurboJPEG", "CSPNG", "CWebP", "CDeflate", "LightCapFiles"]),
        // Captioner (shared, read-only) + per-request state and decoding.
        .target(name: "LightCap", dependencies: ["LightCapCore", "LightCapModel", "LightCapText", "LightCapImage", "LightCapFiles"]),
        // Caption metrics: PTB tokenizer, BLEU, ROUGE-L, CIDEr-D.
        .target(name: "LightCapEval", dependencies: ["LightCapFiles"]),
        // The HTTP service: POST /v1/caption, GET /v1/health, GET /v1/model (docs/SERVER.md).
        .target(name: "LightCapServer", dependencies: [
            "LightCap", "LightCapCore", "LightCapImage", .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The benchmarks behind `lightcap bench caption|visual|image|decode|eval` (the scripts/bench_*.py
        // peers call them): clocks, statistics, memory, the FMA peak.
        .target(name: "LightCapBench", dependencies: [
            "LightCap", "LightCapCore", "LightCapModel", "LightCapImage", "LightCapEval", "CPeakFLOPS",
        ]),
        // An FMA loop measuring the FP32 peak (benchmarks report the fraction of it they reach).
        .target(name: "CPeakFLOPS"),
        // The command line.
        .executableTarget(name: "lightcap", dependencies: [
            "LightCap", "LightCapEval", "LightCapServer", "LightCapBench", "LightCapFiles",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Plain reference twins (direct loops, Double accumulation) the tests compare the fast kernels
        // and CLIPResNet with. Test targets only: no product, library or executable depends on it.
        .target(name: "LightCapReference", dependencies: ["LightCapCore", "LightCapModel"]),
        // What the test targets share: the seeded random generator.
        .target(name: "LightCapTestSupport", dependencies: ["LightCapCore"], path: "Tests/LightCapTestSupport"),
        .testTarget(name: "LightCapCoreTests", dependencies: [
            "LightCapCore", "CKernels", "LightCapReference", "LightCapTestSupport",
        ]),
        .testTarget(name: "LightCapTextTests", dependencies: ["LightCapText", "LightCapTestSupport"]),
        .testTarget(name: "LightCapModelTests", dependencies: [
            "LightCapModel", "LightCapCore", "LightCapReference", "LightCapTestSupport",
        ]),
        .testTarget(name: "LightCapImageTests", dependencies: ["LightCapImage", "LightCapTestSupport"]),
        .testTarget(name: "LightCapTests", dependencies: ["LightCap", "LightCapTestSupport"]),
        .testTarget(name: "LightCapEvalTests", dependencies: ["LightCapEval", "LightCapTestSupport"]),
        // Tests the service through a real loopback socket (no HTTP client library: HummingbirdTesting
        // would add AsyncHTTPClient, swift-crypto and NIOSSL to every fresh build).
        .testTarget(name: "LightCapServerTests", dependencies: [
            "LightCapServer", "LightCap", "LightCapCore", .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        // Runs the built `lightcap` executable on small inputs.
        .testTarget(name: "LightCapCLITests", dependencies: ["lightcap"]),
    ]
)
