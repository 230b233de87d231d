/* MAXIMUM / MINIMUM of two int8 tensors: raw values compared (LiteRT does
 * not requantize), broadcast like MUL (broadcast.c). */
#include "internal.h"

static void max_run(const edged_op* op, int64_t n, const int8_t* a, int64_t step_a, const int8_t* b,
                    int8_t* out, int swapped) {
  (void)op;
  (void)swapped;
  for (int64_t i = 0; i < n; ++i) out[i] = a[i * step_a] > b[i] ? a[i * step_a] : b[i];
}

static void min_run(const edged_op* op, int64_t n, const int8_t* a, int64_t step_a, const int8_t* b,
                    int8_t* out, int swapped) {
  (void)op;
  (void)swapped;
  for (int64_t i = 0; i < n; ++i) out[i] = a[i * step_a] < b[i] ? a[i * step_a] : b[i];
}

void edged_maximum_minimum(const edged_op* op, int32_t batch) {
  edged_bcast_run(op, batch, op->mode == EDGED_MINIMUM ? min_run : max_run);
}
