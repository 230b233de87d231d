/* FULLY_CONNECTED: one GEMM over all rows of the batch, on the weights the
 * planner packed (dense for its variant, or block-sparse). */
#include "internal.h"

void edged_fully_connected(const edged_op* op, int32_t batch) {
  const edged_s8_gemm_fn gemm = edged_matmul_get(op);
  const size_t rows = (size_t)op->in_h, depth = (size_t)op->in_c, n = (size_t)op->out_c;
  const edged_requant rq = edged_requant_of(op, op->mode == EDGED_ROUND_AWAY,
                                            edged_rounds_once(op, (int64_t)rows * batch, (int64_t)depth));
  const int8_t* x = (const int8_t*)op->in[0];
  int8_t* y = (int8_t*)op->out;

  if (op->in_stride[0] == (int64_t)(rows * depth) && op->out_stride == (int64_t)(rows * n)) {
    /* Dense batch: one call, so the kernels can tile across samples. */
    gemm(rows * (size_t)batch, x, depth, op->weights, y, n, &rq);
    return;
  }
  for (int32_t b = 0; b < batch; ++b)
    gemm(rows, x + (size_t)b * (size_t)op->in_stride[0], depth, op->weights,
         y + (size_t)b * (size_t)op->out_stride, n, &rq);
}
