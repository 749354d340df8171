// FusionWeights: which weights the fusion model's layers read at each decoding step, chosen when
// a model is loaded (`Captioner(fusionWeights:)`, `--fusion-weights`), as ConvolutionPolicy
// chooses the backbone's kernels.

/// The weights the fusion layers read at each decoding step (`FusionModel.step`); the image rows
/// (`imageCache`) and the uncached encoder always use F32.
public enum FusionWeights: String, Sendable, CaseIterable {
    /// The model's F32 weights: the exact path, checked against the reference.
    case f32
    /// Weight-only INT8, one scale per output row (`Int8Linear`): a quarter of the bytes a step
    /// reads; the activations stay F32. Changes the numerics: docs/DECODING.md gives its
    /// quality budget.
    case int8
}
