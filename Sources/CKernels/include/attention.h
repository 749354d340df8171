// LightCap's multi-head attention for a few query rows (a decoding step: 2 rows per hypothesis
// against the image rows and the caption so far). At 2 rows two sgemm calls per head cost more
// in call overhead than in arithmetic; these are vector dot products and scaled row sums, on
// the host's vector path.
#ifndef LIGHTCAP_ATTENTION_H
#define LIGHTCAP_ATTENTION_H

/// For each head h (columns h * head_dim ..< (h + 1) * head_dim of every row) and query row i:
/// s_j = scale * (q_i . k_j) + mask[i * tk + j] (no mask when NULL), p = softmax(s) (max
/// subtracted, expf, the sum in order, then times 1 / sum), out_i = sum over j of p_j v_j in
/// order of j, skipping p_j == 0. Rows are `query_stride`, `key_stride`, `value_stride`,
/// `output_stride` floats apart; `scratch` holds tq * tk floats. On the calling thread.
void lightcap_attention_few(const float *query, long query_stride, const float *key, long key_stride,
                            const float *value, long value_stride, long tq, long tk, long heads, long head_dim,
                            float scale, const float *mask, float *scratch, float *output, long output_stride);

/// The same over keys and values held in two blocks: the `tk1` rows at `key` / `value`, then the
/// `tk2` rows at `key2` / `value2` (both with `key_stride` / `value_stride`), as if they were
/// one block of tk1 + tk2 rows: the same scores, softmax and sums in the same order, so the
/// same bits (a decoding step: the image rows shared by every hypothesis, then its own caption
/// rows). `mask` and `scratch` span tk1 + tk2 columns.
void lightcap_attention_few_split(const float *query, long query_stride, const float *key, const float *value, long tk1,
                                  const float *key2, const float *value2, long tk2, long key_stride, long value_stride,
                                  long tq, long heads, long head_dim, float scale, const float *mask, float *scratch,
                                  float *output, long output_stride);

#endif
