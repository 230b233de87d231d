/* CONCATENATION of int8 tensors sharing one quantization: a byte copy over
 * a per-sample [outer, sum(axis_size), inner] view. */
#include "internal.h"

/* `outer` runs of len bytes, packed in x, to runs `row` bytes apart in y;
 * len a compile-time constant where inlined with one. */
EDGED_INLINE void runs_fixed(int8_t* y, size_t row, const int8_t* x, size_t outer, const size_t len) {
  for (size_t o = 0; o < outer; ++o) memcpy(y + o * row, x + o * len, len);
}

/* One input's runs. Channel concatenations copy a few bytes per pixel, so
 * the common run lengths get loops of plain fixed-size moves. */
static void copy_runs(int8_t* y, size_t row, const int8_t* x, size_t outer, size_t len) {
  switch (len) {
    case 1: runs_fixed(y, row, x, outer, 1); break;
    case 2: runs_fixed(y, row, x, outer, 2); break;
    case 4: runs_fixed(y, row, x, outer, 4); break;
    case 8: runs_fixed(y, row, x, outer, 8); break;
    case 16: runs_fixed(y, row, x, outer, 16); break;
    case 32: runs_fixed(y, row, x, outer, 32); break;
    default:
      for (size_t o = 0; o < outer; ++o) edged_copy_bytes(y + o * row, x + o * len, len);
  }
}

void edged_concatenation(const edged_op* op, int32_t batch) {
  const size_t outer = op->outer > 0 ? (size_t)op->outer : 1u, inner = (size_t)op->inner;
  size_t row = 0; /* bytes per outer step, all inputs */
  for (int32_t k = 0; k < op->n_in; ++k) row += (size_t)op->axis_size[k] * inner;
  if (row == 0) return; /* empty: no bytes, however many outer steps */
  for (int32_t b = 0; b < batch; ++b) {
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t k = 0; k < op->n_in; ++k) {
      const size_t len = (size_t)op->axis_size[k] * inner;
      if (len == 0) continue;
      copy_runs(y, row, (const int8_t*)op->in[k] + (size_t)b * (size_t)op->in_stride[k], outer, len);
      y += len;
    }
  }
}
