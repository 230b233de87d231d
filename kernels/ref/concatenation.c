/* CONCATENATION of int8 tensors sharing one quantization: a byte copy over
 * a per-sample [outer, sum(axis_size), inner] view. */
#include "internal.h"

void edged_concatenation(const edged_op* op, int32_t batch) {
  const size_t outer = op->outer > 0 ? (size_t)op->outer : 1u, inner = (size_t)op->inner;
  size_t row = 0; /* bytes per outer step, all inputs */
  for (int32_t k = 0; k < op->n_in; ++k) row += (size_t)op->axis_size[k] * inner;
  if (row == 0) return; /* empty: no bytes, however many outer steps */
  for (int32_t b = 0; b < batch; ++b) {
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t o = 0; o < outer; ++o) {
      for (int32_t k = 0; k < op->n_in; ++k) {
        const size_t len = (size_t)op->axis_size[k] * inner;
        const int8_t* x = (const int8_t*)op->in[k] + (size_t)b * (size_t)op->in_stride[k];
        edged_copy_bytes(y, x + o * len, len); /* often a few channels per pixel */
        y += len;
      }
    }
  }
}
