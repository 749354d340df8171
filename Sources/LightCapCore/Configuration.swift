// Configuration: the Codable mirror of config.json (docs/FORMAT.md). `format_version` (only 1),
// the sections that size the network and their size keys are required: a missing one is an
// `invalidConfiguration` error naming its path, never a silent `tiny` value. The other keys
// (normalisation, epsilons, decoding, tokens, ...) take the defaults of the `tiny` example.

import Foundation
import LightCapFiles

/// Every hyperparameter of a LightCap model, as stored in `config.json`.
public struct Configuration: Codable, Sendable, Equatable {
    /// Input image size and normalisation.
    public struct Image: Codable, Sendable, Equatable {
        public var size: Int = 128
        public var mean: [Float] = [0.48145466, 0.4578275, 0.40821073]
        public var std: [Float] = [0.26862954, 0.26130258, 0.27577711]

        enum CodingKeys: String, CodingKey { case size, mean, std }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            size = try c.required(Int.self, .size)
            mean = try c.decode(.mean, default: mean)
            std = try c.decode(.std, default: std)
        }
    }

    /// The ModifiedResNet visual tower.
    public struct Visual: Codable, Sendable, Equatable {
        public var layers: [Int] = [1, 1, 1, 1]
        public var width: Int = 16
        public var attentionPool: Bool = false
        public var heads: Int = 8
        public var outputDim: Int = 128
        public var batchnormFolded: Bool = true
        /// "none", or "int8": the trunk convolutions whose file has an `input_scale` hold INT8
        /// weights (`lightcap quantize`; docs/FORMAT.md, "INT8 trunk").
        public var quantization: String = "none"

        enum CodingKeys: String, CodingKey {
            case layers, width, heads, quantization
            case attentionPool = "attention_pool"
            case outputDim = "output_dim"
            case batchnormFolded = "batchnorm_folded"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            layers = try c.required([Int].self, .layers)
            width = try c.required(Int.self, .width)
            attentionPool = try c.decode(.attentionPool, default: attentionPool)
            // The attention pool's sizes; read only when its weights are in the file.
            heads = try c.decode(.heads, required: attentionPool, default: heads)
            outputDim = try c.decode(.outputDim, required: attentionPool, default: outputDim)
            batchnormFolded = try c.decode(.batchnormFolded, default: batchnormFolded)
            quantization = try c.decode(.quantization, default: quantization)
        }
    }

    /// The visual concept extractor.
    public struct Concepts: Codable, Sendable, Equatable {
        /// false: the "no concepts" ablation (no extractor weights, no concept segment).
        public var enabled: Bool = true
        public var embedDim: Int = 128
        public var hiddenDim: Int = 128
        public var topK: Int = 8
        public var windows: [Int] = [1, 2, 3]
        public var prompt: String = "a photo of a {}"

        enum CodingKeys: String, CodingKey {
            case enabled, windows, prompt
            case embedDim = "embed_dim"
            case hiddenDim = "hidden_dim"
            case topK = "top_k"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            enabled = try c.decode(.enabled, default: enabled)
            // The extractor's sizes; without concepts there is no extractor to size.
            embedDim = try c.decode(.embedDim, required: enabled, default: embedDim)
            hiddenDim = try c.decode(.hiddenDim, required: enabled, default: hiddenDim)
            topK = try c.decode(.topK, required: enabled, default: topK)
            windows = try c.decode(.windows, default: windows)
            prompt = try c.decode(.prompt, default: prompt)
        }
    }

    /// The cross-modal modulator.
    public struct Modulator: Codable, Sendable, Equatable {
        public var enabled: Bool = true
        public var hiddenDim: Int = 16

        enum CodingKeys: String, CodingKey {
            case enabled
            case hiddenDim = "hidden_dim"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            enabled = try c.decode(.enabled, default: enabled)
            hiddenDim = try c.decode(.hiddenDim, required: enabled, default: hiddenDim)
        }
    }

    /// The BERT fusion model (Hugging Face names).
    public struct Fusion: Codable, Sendable, Equatable {
        public var vocabSize: Int = 64
        public var hiddenSize: Int = 128
        public var numHiddenLayers: Int = 2
        public var numAttentionHeads: Int = 4
        public var intermediateSize: Int = 512
        public var maxPositionEmbeddings: Int = 128
        public var typeVocabSize: Int = 2
        public var layerNormEps: Float = 1e-12
        public var hiddenAct: String = "gelu"
        /// A learned position embedding per grid cell, added to the visual tokens before the
        /// projection's LayerNorm (`image_projection.position_embeddings` [N, D]).
        public var visualPositionEmbeddings: Bool = false
        /// Training-only (the engine ignores them); kept so the mirror round-trips config.json.
        public var hiddenDropoutProb: Float = 0.1
        public var attentionProbsDropoutProb: Float = 0.1

        enum CodingKeys: String, CodingKey {
            case vocabSize = "vocab_size"
            case hiddenSize = "hidden_size"
            case numHiddenLayers = "num_hidden_layers"
            case numAttentionHeads = "num_attention_heads"
            case intermediateSize = "intermediate_size"
            case maxPositionEmbeddings = "max_position_embeddings"
            case typeVocabSize = "type_vocab_size"
            case layerNormEps = "layer_norm_eps"
            case hiddenAct = "hidden_act"
            case visualPositionEmbeddings = "visual_position_embeddings"
            case hiddenDropoutProb = "hidden_dropout_prob"
            case attentionProbsDropoutProb = "attention_probs_dropout_prob"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            vocabSize = try c.required(Int.self, .vocabSize)
            hiddenSize = try c.required(Int.self, .hiddenSize)
            numHiddenLayers = try c.required(Int.self, .numHiddenLayers)
            numAttentionHeads = try c.required(Int.self, .numAttentionHeads)
            intermediateSize = try c.required(Int.self, .intermediateSize)
            maxPositionEmbeddings = try c.required(Int.self, .maxPositionEmbeddings)
            typeVocabSize = try c.required(Int.self, .typeVocabSize)
            layerNormEps = try c.decode(.layerNormEps, default: layerNormEps)
            hiddenAct = try c.decode(.hiddenAct, default: hiddenAct)
            visualPositionEmbeddings = try c.decode(.visualPositionEmbeddings, default: visualPositionEmbeddings)
            hiddenDropoutProb = try c.decode(.hiddenDropoutProb, default: hiddenDropoutProb)
            attentionProbsDropoutProb = try c.decode(.attentionProbsDropoutProb, default: attentionProbsDropoutProb)
        }
    }

    /// The parallel prediction heads.
    public struct Heads: Codable, Sendable, Equatable {
        public var count: Int = 3

        enum CodingKeys: String, CodingKey { case count }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            count = try c.required(Int.self, .count)
        }
    }

    /// Decoding defaults.
    public struct Decoding: Codable, Sendable, Equatable {
        public var maxLength: Int = 20
        public var captionSegmentLength: Int = 22
        public var beamSize: Int = 5

        /// The longest caption a request may ask for: the caption segment also holds [CLS] and [MASK].
        public var longestCaption: Int { captionSegmentLength - 2 }

        enum CodingKeys: String, CodingKey {
            case maxLength = "max_length"
            case captionSegmentLength = "caption_segment_length"
            case beamSize = "beam_size"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxLength = try c.decode(.maxLength, default: maxLength)
            captionSegmentLength = try c.decode(.captionSegmentLength, default: captionSegmentLength)
            beamSize = try c.decode(.beamSize, default: beamSize)
        }
    }

    /// Special token strings.
    public struct Tokens: Codable, Sendable, Equatable {
        public var cls: String = "[CLS]"
        public var sep: String = "[SEP]"
        public var mask: String = "[MASK]"
        public var pad: String = "[PAD]"
        public var unk: String = "[UNK]"

        enum CodingKeys: String, CodingKey { case cls, sep, mask, pad, unk }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            cls = try c.decode(.cls, default: cls)
            sep = try c.decode(.sep, default: sep)
            mask = try c.decode(.mask, default: mask)
            pad = try c.decode(.pad, default: pad)
            unk = try c.decode(.unk, default: unk)
        }
    }

    /// Tokenizer options.
    public struct Tokenizer: Codable, Sendable, Equatable {
        public var doLowerCase: Bool = true

        enum CodingKeys: String, CodingKey { case doLowerCase = "do_lower_case" }
        public init() {}
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            doLowerCase = try c.decode(.doLowerCase, default: doLowerCase)
        }
    }

    public var formatVersion: Int = 1
    public var name: String = "tiny"
    public var image = Image()
    public var visual = Visual()
    public var concepts = Concepts()
    public var modulator = Modulator()
    public var fusion = Fusion()
    public var heads = Heads()
    public var decoding = Decoding()
    public var tokens = Tokens()
    public var tokenizer = Tokenizer()

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case name, image, visual, concepts, modulator, fusion, heads, decoding, tokens, tokenizer
    }

    /// The `tiny` example of docs/FORMAT.md (in code only: a config.json must state its sizes).
    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let version = try c.decodeIfPresent(Int.self, forKey: .formatVersion) else {
            throw LightCapError.invalidConfiguration(reason: "format_version is missing")
        }
        // Before the sections: another format's keys are not this one's.
        guard version == 1 else {
            throw LightCapError.invalidConfiguration(reason: "format_version \(version) is not supported (only 1)")
        }
        formatVersion = version
        name = try c.decode(.name, default: name)
        image = try c.required(Image.self, .image)
        visual = try c.required(Visual.self, .visual)
        concepts = try c.required(Concepts.self, .concepts)
        // Optional without concepts: the modulator then must be off, and an absent section
        // (enabled by default) fails validation with the reason.
        if concepts.enabled {
            modulator = try c.required(Modulator.self, .modulator)
        } else {
            modulator = try c.decode(.modulator, default: modulator)
        }
        fusion = try c.required(Fusion.self, .fusion)
        heads = try c.required(Heads.self, .heads)
        decoding = try c.decode(.decoding, default: decoding)
        tokens = try c.decode(.tokens, default: tokens)
        tokenizer = try c.decode(.tokenizer, default: tokenizer)
    }

    /// Parses and validates config.json bytes.
    public static func decode(_ data: Data) throws -> Configuration {
        let config: Configuration
        do {
            config = try JSONDecoder().decode(Configuration.self, from: data)
        } catch let error as LightCapError {
            throw error
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw LightCapError.invalidConfiguration(reason: "wrong type at '\(path)': \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw LightCapError.invalidConfiguration(reason: "not valid JSON\(path.isEmpty ? "" : " at '\(path)'"): \(context.debugDescription)")
        } catch {
            throw LightCapError.invalidConfiguration(reason: "\(error)")
        }
        try config.validate()
        return config
    }

    /// Reads and validates the config.json at `url`.
    public static func load(contentsOf url: URL) throws -> Configuration {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw LightCapError.fileNotFound(path: url.path)
        }
        let data: Data
        do { data = try FileContents.read(url) } catch {
            throw LightCapError.io(path: url.path, reason: "\(error)")
        }
        return try decode(data)
    }

    /// Throws `invalidConfiguration` naming the first inconsistent value.
    public func validate() throws {
        func fail(_ reason: String) -> LightCapError { .invalidConfiguration(reason: reason) }
        guard formatVersion == 1 else { throw fail("format_version \(formatVersion) is not supported (only 1)") }
        // Every size first, before any of them enters arithmetic: a size over the limit (no model
        // comes near it) would overflow the products below and in the loaders, a trap, not an error.
        let sizes: [(String, Int)] = [
            ("image.size", image.size), ("visual.width", visual.width), ("visual.heads", visual.heads),
            ("visual.output_dim", visual.outputDim), ("concepts.embed_dim", concepts.embedDim),
            ("concepts.hidden_dim", concepts.hiddenDim), ("concepts.top_k", concepts.topK),
            ("modulator.hidden_dim", modulator.hiddenDim), ("fusion.vocab_size", fusion.vocabSize),
            ("fusion.hidden_size", fusion.hiddenSize), ("fusion.num_hidden_layers", fusion.numHiddenLayers),
            ("fusion.num_attention_heads", fusion.numAttentionHeads), ("fusion.intermediate_size", fusion.intermediateSize),
            ("fusion.max_position_embeddings", fusion.maxPositionEmbeddings), ("fusion.type_vocab_size", fusion.typeVocabSize),
            ("heads.count", heads.count), ("decoding.max_length", decoding.maxLength), ("decoding.beam_size", decoding.beamSize),
            ("decoding.caption_segment_length", decoding.captionSegmentLength),
        ] + visual.layers.map { ("visual.layers", $0) } + concepts.windows.map { ("concepts.windows", $0) }
        for (name, value) in sizes where value > Configuration.maxSize {
            throw fail("\(name) \(value) is over the limit of \(Configuration.maxSize)")
        }
        // The two sizes no weight's shape ties to the file: a session allocates the grid
        // ((image.size / 32)^2 x channels) and beam_size hypotheses of caches from them alone.
        guard image.size <= Configuration.maxImageSize else {
            throw fail("image.size \(image.size) is over the limit of \(Configuration.maxImageSize)")
        }
        guard decoding.beamSize <= Configuration.maxBeamSize else {
            throw fail("decoding.beam_size \(decoding.beamSize) is over the limit of \(Configuration.maxBeamSize)")
        }
        guard image.size > 0, image.size % 32 == 0 else { throw fail("image.size \(image.size) must be a positive multiple of 32") }
        guard image.mean.count == 3, image.std.count == 3 else { throw fail("image.mean and image.std need 3 values") }
        guard image.std.allSatisfy({ $0 > 0 }) else { throw fail("image.std must be positive") }
        guard visual.layers.count == 4, visual.layers.allSatisfy({ $0 >= 1 }) else {
            throw fail("visual.layers must be 4 positive block counts, got \(visual.layers)")
        }
        guard visual.width > 0, visual.width % 2 == 0 else { throw fail("visual.width must be positive and even, got \(visual.width)") }
        guard ["none", "int8"].contains(visual.quantization) else {
            throw fail("visual.quantization \"\(visual.quantization)\" is not \"none\" or \"int8\"")
        }
        if visual.quantization == "int8" && !visual.batchnormFolded {
            throw fail("visual.quantization int8 needs visual.batchnorm_folded true (INT8 weights are folded)")
        }
        if visual.attentionPool {
            guard visual.heads > 0, gridChannels % visual.heads == 0 else {
                throw fail("visual.heads \(visual.heads) must divide the grid channels \(gridChannels)")
            }
            guard visual.outputDim > 0 else { throw fail("visual.output_dim must be positive") }
        }
        guard concepts.embedDim > 0, concepts.hiddenDim > 0, concepts.topK > 0 else {
            throw fail("concepts.embed_dim, hidden_dim and top_k must be positive")
        }
        guard !concepts.windows.isEmpty, concepts.windows.allSatisfy({ $0 >= 1 }) else {
            throw fail("concepts.windows \(concepts.windows) must be positive")
        }
        guard concepts.enabled || !modulator.enabled else {
            throw fail("modulator.enabled requires concepts.enabled (set modulator.enabled false too)")
        }
        guard modulator.hiddenDim > 0 else { throw fail("modulator.hidden_dim must be positive") }
        guard fusion.vocabSize > 0, fusion.hiddenSize > 0, fusion.numHiddenLayers > 0, fusion.intermediateSize > 0 else {
            throw fail("fusion sizes must be positive")
        }
        guard fusion.numAttentionHeads > 0, fusion.hiddenSize % fusion.numAttentionHeads == 0 else {
            throw fail("fusion.num_attention_heads \(fusion.numAttentionHeads) must divide hidden_size \(fusion.hiddenSize)")
        }
        guard fusion.typeVocabSize >= 2 else { throw fail("fusion.type_vocab_size must be at least 2") }
        guard ["gelu", "relu", "gelu_new"].contains(fusion.hiddenAct) else {
            throw fail("fusion.hidden_act '\(fusion.hiddenAct)' is not supported (gelu, relu, gelu_new)")
        }
        guard fusion.layerNormEps > 0 else { throw fail("fusion.layer_norm_eps must be positive") }
        guard heads.count >= 1 else { throw fail("heads.count must be at least 1") }
        guard decoding.maxLength >= 1, decoding.beamSize >= 1 else { throw fail("decoding.max_length and beam_size must be positive") }
        guard decoding.captionSegmentLength >= decoding.maxLength + 2 else {
            throw fail("decoding.caption_segment_length \(decoding.captionSegmentLength) must hold [CLS], max_length tokens and [MASK]")
        }
        guard decoding.captionSegmentLength < fusion.maxPositionEmbeddings else {
            throw fail("decoding.caption_segment_length must be below fusion.max_position_embeddings")
        }
    }

    /// The largest value any size of a configuration may take (2^20): a product of three sizes
    /// stays below 2^60, far from overflowing.
    public static let maxSize = 1 << 20
    /// The largest `image.size` (a 128 x 128 grid; CLIP models use 224 to 448).
    public static let maxImageSize = 4096
    /// The largest `decoding.beam_size`.
    public static let maxBeamSize = 256

    /// Channels of the grid: `visual.width * 32`.
    public var gridChannels: Int { visual.width * 32 }
    /// Side of the grid: `image.size / 32`.
    public var gridSide: Int { image.size / 32 }
    /// Number of visual tokens: `gridSide^2`.
    public var visualTokens: Int { gridSide * gridSide }
}

extension KeyedDecodingContainer {
    /// The value at `key`, or `fallback` when it is absent.
    func decode<T: Decodable>(_ key: Key, default fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }

    /// The value at `key`: required when `required` (a size the configuration uses), else
    /// `fallback` when absent.
    func decode<T: Decodable>(_ key: Key, required: Bool, default fallback: T) throws -> T {
        required ? try self.required(T.self, key) : try decode(key, default: fallback)
    }

    /// The value at `key`; absent or null is `invalidConfiguration` naming the key's path
    /// (`fusion.hidden_size is missing`).
    func required<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
        guard let value = try decodeIfPresent(type, forKey: key) else {
            let path = (codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw LightCapError.invalidConfiguration(reason: "\(path) is missing")
        }
        return value
    }
}
