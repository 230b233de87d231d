/* Portable block-sparse int8 GEMM: the semantic baseline of the s8_spmm
 * family and the fallback for block shapes a SIMD variant does not cover.
 * Any block shape, any depth (the ragged last block column is clipped). */
#include "internal.h"

void edged_s8_spmm_ref(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                       int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  const size_t n = (size_t)h->out_c, depth = (size_t)h->depth;
  const size_t br = (size_t)h->block_rows, bc = (size_t)h->block_cols;
  const int32_t* row_ptr = edged_sparse_row_ptr(h);
  const int32_t* term = edged_sparse_terms(h);
  const int8_t* values = edged_sparse_values(h);
  uint32_t acc[EDGED_SPARSE_MAX_BLOCK];

  for (size_t r = 0; r < m; ++r) {
    const int8_t* x = a + r * a_stride;
    int8_t* y = c + r * c_stride;
    for (size_t i = 0; i < (size_t)h->n_block_rows; ++i) {
      for (size_t j = 0; j < br; ++j) acc[j] = (uint32_t)term[i * br + j];
      for (size_t k = (size_t)row_ptr[i]; k < (size_t)row_ptr[i + 1]; ++k) {
        const size_t d0 = edged_sparse_col(h, k) * bc;
        const size_t cols = depth - d0 < bc ? depth - d0 : bc;
        const int8_t* blk = values + k * br * bc;
        for (size_t j = 0; j < br; ++j)
          for (size_t t = 0; t < cols; ++t)
            acc[j] += (uint32_t)((int32_t)x[d0 + t] * (int32_t)blk[j * bc + t]);
      }
      for (size_t j = 0; j < br && i * br + j < n; ++j) {
        const size_t o = i * br + j;
        y[o] = edged_requant1((int32_t)acc[j], rq->multiplier[o], rq->shift[o], rq->output_offset,
                              rq->act_min, rq->act_max, edged_rq_mode(rq));
      }
    }
  }
}
