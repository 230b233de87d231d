/* HMATRIX: a FULLY_CONNECTED whose weights are a hierarchical matrix.
 *
 * An H-matrix is a quad-tree of dense and low-rank (A_l B_l) blocks. Its
 * product is two ordinary int8 products: stage 1 stacks every B_l (each on
 * its block's input columns) into W1 and requantizes W1 x to int8 features
 * `mid`; stage 2 multiplies [x | mid] by W2, which holds the dense blocks on
 * the x columns and every A_l on its own mid columns. W1 and W2 are mostly
 * zero blocks, so they run on the block-sparse GEMM kernels (any variant,
 * any block shape) and the H-matrix needs no micro-kernel of its own. Rows
 * go through scratch [x | mid] in chunks of up to HMATRIX_CHUNK rows, so the
 * kernels can tile across a batch with a scratch size that does not depend
 * on it. */
#include "internal.h"

enum { HMATRIX_CHUNK = 8 };

size_t edged_hmatrix_scratch_size(const edged_op* op, int32_t batch) {
  (void)batch; /* chunks of HMATRIX_CHUNK rows, whatever the batch */
  if (op->in_h < 1 || op->in_c < 1 || op->mid_c < 1) return 0;
  return (size_t)HMATRIX_CHUNK * ((size_t)op->in_c + (size_t)op->mid_c);
}

void edged_hmatrix(const edged_op* op, int32_t batch) {
  const edged_s8_gemm_fn gemm = edged_matmul_get(op);
  const edged_requant mid_rq = {op->mid_multiplier, op->mid_shift, 0, -128, 127, 0, 0};
  const edged_requant out_rq = {op->out_multiplier, op->out_shift, op->output_offset,
                                op->act_min, op->act_max, 0, 0};
  const size_t depth = (size_t)op->in_c, width = depth + (size_t)op->mid_c, n = (size_t)op->out_c;
  const size_t rows_per_sample = (size_t)op->in_h, rows = rows_per_sample * (size_t)batch;
  const int8_t* x = (const int8_t*)op->in[0];
  int8_t* y = (int8_t*)op->out;
  int8_t* u = (int8_t*)op->scratch;

  for (size_t r0 = 0; r0 < rows; r0 += HMATRIX_CHUNK) {
    const size_t m = rows - r0 < HMATRIX_CHUNK ? rows - r0 : HMATRIX_CHUNK;
    for (size_t i = 0; i < m; ++i) { /* row r of the batch: sample r / rows_per_sample */
      const size_t r = r0 + i, b = r / rows_per_sample, j = r % rows_per_sample;
      memcpy(u + i * width, x + b * (size_t)op->in_stride[0] + j * depth, depth);
    }
    gemm(m, u, width, op->mid_weights, u + depth, width, &mid_rq);
    if (op->out_stride == (int64_t)(rows_per_sample * n)) {
      gemm(m, u, width, op->weights, y + r0 * n, n, &out_rq);
      continue;
    }
    for (size_t i = 0; i < m; ++i) {
      const size_t r = r0 + i, b = r / rows_per_sample, j = r % rows_per_sample;
      gemm(1, u + i * width, width, op->weights, y + b * (size_t)op->out_stride + j * n, n, &out_rq);
    }
  }
}
