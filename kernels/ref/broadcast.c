/* Broadcasting of two operands (MUL, ADD) the way LiteRT's optimized int8
 * kernels classify it.
 *
 * Operand k has bcast_rank axes bcast_shape[k] (padded with leading 1s); its
 * leading extent is multiplied by the batch when bcast_batched[k] is set, so
 * the runs are those LiteRT computes for the batch actually run. */
#include "internal.h"

/* LiteRT's ProcessBroadcastShapes on the shapes at `batch`: 0 for equal
 * shapes (y[4] is then the flat size), 1 for fivefold (y filled, *swap when
 * the second operand is the broadcast one), -1 for the generic case. */
int32_t edged_bcast_pattern(const edged_op* op, int32_t batch, int64_t y[5], int* swap) {
  const int32_t rank = op->bcast_rank;
  int64_t s[2][EDGED_BCAST_MAX_RANK];
  int equal = 1;
  for (int k = 0; k < 2; ++k)
    for (int32_t d = 0; d < rank; ++d)
      s[k][d] = (int64_t)op->bcast_shape[k][d] * (d == 0 && op->bcast_batched[k] ? batch : 1);
  for (int32_t d = 0; d < rank; ++d) equal &= s[0][d] == s[1][d];
  for (int j = 0; j < 5; ++j) y[j] = 1;
  *swap = 0;
  if (equal) {
    for (int32_t d = 0; d < rank; ++d) y[4] *= s[0][d];
    return 0;
  }
  int found = 0;
  for (int32_t d = rank - 1; d >= 0 && !found; --d) {
    if (s[0][d] == s[1][d]) continue;
    if (s[0][d] == 1) found = 1;
    else if (s[1][d] == 1) found = 2;
    else return -1;
  }
  *swap = found == 2;
  const int64_t* a = s[*swap ? 1 : 0];
  const int64_t* b = s[*swap ? 0 : 1];
  int32_t i = rank - 1;
  for (; i >= 0 && a[i] == b[i]; --i) y[4] *= b[i];
  for (; i >= 0 && a[i] == 1; --i) y[3] *= b[i];
  for (; i >= 0 && a[i] == b[i]; --i) y[2] *= a[i];
  for (; i >= 0 && b[i] == 1; --i) y[1] *= a[i];
  for (; i >= 0 && a[i] == b[i]; --i) y[0] *= b[i];
  return i >= 0 ? -1 : 1;
}

/* The descriptor describes memory the loops stay inside of: shapes that
 * broadcast, strides equal to the per-sample sizes, and a fivefold or flat
 * pattern (checked at batch 1 and 2: every larger batch has the pattern of 2). */
int edged_bcast_valid(const edged_op* op) {
  const int32_t rank = op->bcast_rank;
  if (rank < 1 || rank > EDGED_BCAST_MAX_RANK || op->out == NULL || op->out_stride < 0) return 0;
  if (op->in[0] == NULL || op->in[1] == NULL) return 0;
  if (!op->bcast_batched[0] && !op->bcast_batched[1]) return 0;
  int64_t per_sample[2] = {1, 1}, out_per_sample = 1;
  for (int k = 0; k < 2; ++k) {
    if (op->bcast_batched[k] != 0 && op->bcast_batched[k] != 1) return 0;
    if (op->bcast_shape[k][0] != 1) return 0;
  }
  for (int32_t d = 0; d < rank; ++d) {
    const int64_t s0 = op->bcast_shape[0][d], s1 = op->bcast_shape[1][d];
    if (s0 < 1 || s1 < 1 || (s0 != s1 && s0 != 1 && s1 != 1)) return 0;
    per_sample[0] *= s0;
    per_sample[1] *= s1;
    out_per_sample *= s0 > s1 ? s0 : s1;
    if (out_per_sample > INT32_MAX) return 0;
  }
  for (int k = 0; k < 2; ++k)
    if (op->in_stride[k] != (op->bcast_batched[k] ? per_sample[k] : 0)) return 0;
  if (op->out_stride != out_per_sample) return 0;
  int64_t y[5];
  int swap;
  return edged_bcast_pattern(op, 1, y, &swap) >= 0 && edged_bcast_pattern(op, 2, y, &swap) >= 0;
}

/* A run against one broadcast value, through a table: its output depends
 * only on the other operand's byte and on whether the position is in the
 * run's vector body (the first n - n % 16 elements: a multiple of LiteRT's 16-
 * and 8-element blocks) or its tail. The body comes from a table the run
 * function fills for all 256 bytes (256 is all body), the tail from the run
 * function on the tail alone, which classifies it the same way. */
static void scalar_run_tabled(const edged_op* op, int64_t n, const int8_t* a, const int8_t* b, int8_t* out,
                              int swap, edged_bcast_run_fn run) {
  int8_t every[256], table[256];
  for (int j = 0; j < 256; ++j) every[j] = (int8_t)(j < 128 ? j : j - 256);
  run(op, 256, a, 0, every, table, swap);
  const int64_t body = n - n % 16;
  for (int64_t i = 0; i < body; ++i) out[i] = table[(uint8_t)b[i]];
  if (n > body) run(op, n - body, a, 0, b + body, out + body, swap);
}

/* Runs this long and longer go through a table (its 256 entries cost about
 * as much as 256 elements computed directly). */
#define TABLE_MIN_RUN 512

static void bcast_run(const edged_op* op, int32_t batch, edged_bcast_run_fn run, int tabled) {
  int64_t y[5];
  int swap;
  const int32_t kind = edged_bcast_pattern(op, batch, y, &swap);
  const int8_t* in0 = (const int8_t*)op->in[0];
  const int8_t* in1 = (const int8_t*)op->in[1];
  int8_t* out = (int8_t*)op->out;
  if (kind == 0) {
    run(op, y[4], in0, 1, in1, out, 0);
    return;
  }
  if (kind < 0) return; /* rejected by validation */
  /* LiteRT's BinaryBroadcastFiveFold; a is the operand broadcast along y3. */
  const int8_t* a = swap ? in1 : in0;
  const int8_t* b_reset = swap ? in0 : in1;
  for (int64_t i0 = 0; i0 < y[0]; ++i0) {
    const int8_t* b = b_reset;
    for (int64_t i1 = 0; i1 < y[1]; ++i1) {
      b = b_reset;
      for (int64_t i2 = 0; i2 < y[2]; ++i2) {
        if (y[4] > 1) {
          for (int64_t i3 = 0; i3 < y[3]; ++i3) {
            run(op, y[4], a, 1, b, out, swap);
            b += y[4];
            out += y[4];
          }
          a += y[4];
        } else {
          if (tabled && y[3] >= TABLE_MIN_RUN)
            scalar_run_tabled(op, y[3], a, b, out, swap, run);
          else
            run(op, y[3], a, 0, b, out, swap);
          b += y[3];
          out += y[3];
          a += 1;
        }
      }
    }
    b_reset = b;
  }
}

void edged_bcast_run(const edged_op* op, int32_t batch, edged_bcast_run_fn run) { bcast_run(op, batch, run, 0); }

void edged_bcast_run_tabled(const edged_op* op, int32_t batch, edged_bcast_run_fn run) {
  bcast_run(op, batch, run, 1);
}
