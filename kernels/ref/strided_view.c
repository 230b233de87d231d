/* STRIDED_VIEW: TRANSPOSE, SLICE and STRIDED_SLICE of int8 as one affine
 * gather. The output is walked in order with an odometer over the outer axes;
 * the innermost axis is a memcpy when its stride is 1. */
#include "internal.h"

/* Saturating helpers: any field values give a finite verdict. */
static int64_t sat_add(int64_t a, int64_t b) {
  if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) return b > 0 ? INT64_MAX : INT64_MIN;
  return a + b;
}

static int64_t sat_mul(int64_t a, int64_t b) { /* a >= 0 */
  if (a == 0 || b == 0) return 0;
  if (b > 0) return b > INT64_MAX / a ? INT64_MAX : a * b;
  return b < INT64_MIN / a ? INT64_MIN : a * b;
}

int edged_strided_view_valid(const edged_op* op) {
  if (op->out == NULL || op->in[0] == NULL || op->in_stride[0] < 0 || op->out_stride < 0) return 0;
  if (op->view_rank < 1 || op->view_rank > 6 || op->view_start < 0) return 0;
  int64_t lowest = op->view_start, highest = op->view_start, count = 1;
  for (int32_t k = 0; k < op->view_rank; ++k) {
    if (op->view_shape[k] < 1) return 0;
    const int64_t reach = sat_mul(op->view_shape[k] - 1, op->view_stride[k]);
    if (reach < 0) lowest = sat_add(lowest, reach);
    else highest = sat_add(highest, reach);
    count = sat_mul(count, op->view_shape[k]);
  }
  return lowest >= 0 && highest < op->in_stride[0] && count <= op->out_stride;
}

void edged_strided_view(const edged_op* op, int32_t batch) {
  const int32_t rank = op->view_rank, last = rank - 1;
  const size_t inner = (size_t)op->view_shape[last];
  const int64_t step = op->view_stride[last];
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    int32_t index[6] = {0, 0, 0, 0, 0, 0};
    int64_t at = op->view_start;
    for (;;) {
      if (step == 1) {
        memcpy(y, x + at, inner);
      } else {
        for (size_t i = 0; i < inner; ++i) y[i] = x[at + (int64_t)i * step];
      }
      y += inner;
      int32_t k = last - 1;
      for (; k >= 0; --k) {
        at += op->view_stride[k];
        if (++index[k] < op->view_shape[k]) break;
        at -= (int64_t)index[k] * op->view_stride[k];
        index[k] = 0;
      }
      if (k < 0) break;
    }
  }
}
