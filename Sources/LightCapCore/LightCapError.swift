// Typed errors of the LightCap engine. Every case names the file, tensor or key at fault.

/// An error of the LightCap engine; `description` says what is wrong and where.
public enum LightCapError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A file or directory that should exist does not.
    case fileNotFound(path: String)
    /// The operating system refused to open or map a file.
    case io(path: String, reason: String)
    /// The file ends before its 8-byte header length.
    case truncatedFile(path: String, size: Int)
    /// The header length points past the end of the file.
    case headerBeyondFile(path: String, headerLength: UInt64, fileSize: Int)
    /// The JSON header cannot be parsed or an entry is malformed.
    case invalidHeader(path: String, reason: String)
    /// A tensor has a dtype the engine does not read.
    case unsupportedDtype(tensor: String, dtype: String)
    /// A tensor's byte range is outside the data section (truncated file or bad offsets).
    case tensorOutOfRange(tensor: String, begin: Int, end: Int, dataSize: Int)
    /// Two tensors share bytes.
    case overlappingTensors(first: String, second: String)
    /// shape x dtype size differs from the byte range.
    case byteSizeMismatch(tensor: String, shape: [Int], dtype: String, bytes: Int)
    /// A tensor is read as a dtype it does not have.
    case wrongDtype(tensor: String, expected: String, actual: String)
    /// A tensor the model needs is not in the file.
    case missingTensor(key: String)
    /// A tensor has another shape than the configuration implies.
    case shapeMismatch(key: String, expected: [Int], actual: [Int])
    /// A tensor holds NaN or infinity.
    case nonFiniteWeights(key: String, index: Int, value: Float)
    /// Tensors in the file that the model never read.
    case unusedTensors(keys: [String])
    /// config.json is missing, unreadable or inconsistent.
    case invalidConfiguration(reason: String)
    /// An argument to a kernel or model does not fit (shape, length).
    case invalidArgument(reason: String)
    /// oneDNN returned an error status.
    case kernel(operation: String, status: Int)
    /// The caller stopped the work (a deadline passed) before it finished.
    case cancelled(stage: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "file not found: \(path)"
        case .io(let path, let reason):
            return "cannot read \(path): \(reason)"
        case .truncatedFile(let path, let size):
            return "truncated safetensors file \(path): \(size) bytes, shorter than the 8-byte header length"
        case .headerBeyondFile(let path, let headerLength, let fileSize):
            return "safetensors header of \(path) claims \(headerLength) bytes, beyond the end of the file (\(fileSize) bytes): truncated or corrupt file"
        case .invalidHeader(let path, let reason):
            return "invalid safetensors header in \(path): \(reason)"
        case .unsupportedDtype(let tensor, let dtype):
            return "tensor '\(tensor)' has unsupported dtype '\(dtype)' (F32, F16, BF16 and I64 are read)"
        case .tensorOutOfRange(let tensor, let begin, let end, let dataSize):
            return "tensor '\(tensor)' data offsets [\(begin), \(end)) are out of range of the data section (\(dataSize) bytes): truncated file or bad offsets"
        case .overlappingTensors(let first, let second):
            return "tensors '\(first)' and '\(second)' have overlapping data offsets"
        case .byteSizeMismatch(let tensor, let shape, let dtype, let bytes):
            return "tensor '\(tensor)' of shape \(shape) and dtype \(dtype) does not fit its \(bytes)-byte range"
        case .wrongDtype(let tensor, let expected, let actual):
            return "tensor '\(tensor)' has dtype \(actual), expected \(expected)"
        case .missingTensor(let key):
            return "missing tensor '\(key)'"
        case .shapeMismatch(let key, let expected, let actual):
            return "tensor '\(key)' has shape \(actual), expected \(expected) from the configuration"
        case .nonFiniteWeights(let key, let index, let value):
            return "tensor '\(key)' holds a non-finite value (\(value)) at flat index \(index)"
        case .unusedTensors(let keys):
            let shown = keys.prefix(20).joined(separator: ", ")
            return "\(keys.count) unused tensor(s) in the weights: \(shown)\(keys.count > 20 ? ", ..." : "")"
        case .invalidConfiguration(let reason):
            return "invalid configuration: \(reason)"
        case .invalidArgument(let reason):
            return "invalid argument: \(reason)"
        case .kernel(let operation, let status):
            return "oneDNN failed in \(operation) (status \(status))"
        case .cancelled(let stage):
            return "cancelled during \(stage)"
        }
    }
}
