import Foundation
import LightCapFiles

// The COCO caption evaluation (pycocoevalcap's COCOEvalCap with params['image_id'] set to the
// images that have a result, as its example does): tokenize references and results with the
// PTB tokenizer, then BLEU-1..4, METEOR (Java), ROUGE-L and CIDEr-D, named as pycocoevalcap
// names them. SPICE is not offered: it needs Stanford CoreNLP models that pycocoevalcap
// downloads at run time, and LightCap never downloads anything.

/// Errors of the caption evaluation, each naming the problem.
public enum EvalError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case badFormat(path: String, reason: String)
    case duplicateResult(imageID: String)
    case unknownImage(imageID: String)
    case noResults
    case meteorUnavailable(String)
    case meteorFailed(String)

    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "cannot read \(p): \(r)"
        case .badFormat(let p, let r): return "\(p): \(r)"
        case .duplicateResult(let id): return "the results hold more than one caption for image \(id)"
        case .unknownImage(let id): return "the results caption image \(id), which the annotations do not have"
        case .noResults: return "there are no results to evaluate"
        case .meteorUnavailable(let r): return "METEOR unavailable: \(r)"
        case .meteorFailed(let r): return "METEOR failed: \(r)"
        }
    }
}

/// Reference captions per image, in the annotation file's order.
public struct CaptionReferences: Sendable {
    public var imageIDs: [String]
    public var captions: [String: [String]]

    public init(imageIDs: [String], captions: [String: [String]]) {
        self.imageIDs = imageIDs
        self.captions = captions
    }

    /// Reads a COCO captions annotation file (`images` [{id}], `annotations` [{image_id, caption}]).
    public static func load(cocoAnnotations url: URL) throws -> CaptionReferences {
        let object = try readJSON(url)
        guard let dict = object as? [String: Any], let anns = dict["annotations"] as? [[String: Any]] else {
            throw EvalError.badFormat(path: url.path, reason: "expected an object with an \"annotations\" list")
        }
        var order: [String] = []
        var seen = Set<String>()
        for img in dict["images"] as? [[String: Any]] ?? [] {
            guard let id = idString(img["id"]) else {
                throw EvalError.badFormat(path: url.path, reason: "an image has no \"id\"")
            }
            if seen.insert(id).inserted { order.append(id) }
        }
        var captions: [String: [String]] = [:]
        for (i, a) in anns.enumerated() {
            guard let id = idString(a["image_id"]), let c = a["caption"] as? String else {
                throw EvalError.badFormat(path: url.path, reason: "annotation \(i) needs \"image_id\" and a \"caption\" string")
            }
            captions[id, default: []].append(c)
            if seen.insert(id).inserted { order.append(id) }
        }
        return CaptionReferences(imageIDs: order, captions: captions)
    }

    /// Reads a COCO results file: a list of {image_id, caption}, one per image.
    public static func loadResults(_ url: URL) throws -> [String: String] {
        guard let list = try readJSON(url) as? [[String: Any]] else {
            throw EvalError.badFormat(path: url.path, reason: "expected a list of {\"image_id\", \"caption\"}")
        }
        var out: [String: String] = [:]
        for (i, r) in list.enumerated() {
            guard let id = idString(r["image_id"]), let c = r["caption"] as? String else {
                throw EvalError.badFormat(path: url.path, reason: "result \(i) needs \"image_id\" and a \"caption\" string")
            }
            if out[id] != nil { throw EvalError.duplicateResult(imageID: id) }
            out[id] = c
        }
        return out
    }

    static func readJSON(_ url: URL) throws -> Any {
        let data: Data
        do { data = try FileContents.read(url) } catch {
            throw EvalError.unreadable(path: url.path, reason: (error as NSError).localizedDescription)
        }
        do { return try JSONSerialization.jsonObject(with: data) } catch {
            throw EvalError.badFormat(path: url.path, reason: "not valid JSON")
        }
    }

    static func idString(_ v: Any?) -> String? {
        switch v {
        case let s as String: return s
        case let n as NSNumber: return n.stringValue
        default: return nil
        }
    }
}

/// The scores of one evaluation.
public struct EvaluationReport: Sendable {
    /// Scores keyed by pycocoevalcap's metric names, in its order.
    public var scores: [(name: String, value: Double)]
    /// Per-image scores per metric, images in `imageIDs` order.
    public var perImage: [String: [Double]]
    public var imageIDs: [String]
    /// Metrics that were not computed, with the reason.
    public var unavailable: [(name: String, reason: String)]

    public subscript(_ name: String) -> Double? { scores.first { $0.name == name }?.value }
}

/// Scores results against references like pycocoevalcap's COCOEvalCap.
public struct CaptionEvaluator: Sendable {
    /// Whether to run METEOR through Java.
    public var meteor: Bool

    public init(meteor: Bool = true) { self.meteor = meteor }

    public static let spiceNote = "needs Stanford CoreNLP models that pycocoevalcap downloads at run time; LightCap runs offline"

    /// Evaluates the images that have a result (in reference order).
    public func evaluate(references: CaptionReferences, results: [String: String]) throws -> EvaluationReport {
        for id in results.keys where references.captions[id] == nil { throw EvalError.unknownImage(imageID: id) }
        let ids = references.imageIDs.filter { results[$0] != nil }
        guard !ids.isEmpty else { throw EvalError.noResults }
        let tokenizer = PTBTokenizer()
        let refLists = ids.map { references.captions[$0]! }
        let flatRefs = tokenizer.tokenize(refLists.flatMap { $0 })
        var refs: [[String]] = []
        var k = 0
        for list in refLists {
            refs.append(Array(flatRefs[k..<(k + list.count)]))
            k += list.count
        }
        let hyps = tokenizer.tokenize(ids.map { results[$0]! })
        return try evaluateTokenized(imageIDs: ids, hypotheses: hyps, references: refs)
    }

    /// Evaluates captions that are already tokenized.
    public func evaluateTokenized(imageIDs: [String], hypotheses: [String], references: [[String]]) throws -> EvaluationReport {
        var report = EvaluationReport(scores: [], perImage: [:], imageIDs: imageIDs, unavailable: [])
        let bleu = Bleu(n: 4).score(hypotheses: hypotheses, references: references)
        for k in 0..<4 {
            report.scores.append(("Bleu_\(k + 1)", bleu.corpus[k]))
            report.perImage["Bleu_\(k + 1)"] = bleu.perImage[k]
        }
        if meteor {
            switch Meteor.locate() {
            case .success(let m):
                let (s, per) = try m.score(hypotheses: hypotheses, references: references)
                report.scores.append(("METEOR", s))
                report.perImage["METEOR"] = per
            case .failure(let e):
                if case .meteorUnavailable(let reason) = e {
                    report.unavailable.append(("METEOR", reason))
                } else {
                    report.unavailable.append(("METEOR", e.description))
                }
            }
        } else {
            report.unavailable.append(("METEOR", "not requested"))
        }
        let rouge = Rouge().score(hypotheses: hypotheses, references: references)
        report.scores.append(("ROUGE_L", rouge.mean))
        report.perImage["ROUGE_L"] = rouge.perImage
        let cider = CiderD().score(hypotheses: hypotheses, references: references)
        report.scores.append(("CIDEr", cider.mean))
        report.perImage["CIDEr"] = cider.perImage
        report.unavailable.append(("SPICE", Self.spiceNote))
        return report
    }
}
