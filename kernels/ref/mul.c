/* MUL of two int8 tensors with broadcasting, as LiteRT's optimized int8
 * kernel runs it on x86 (see edged/ops/mul.py): equal shapes are one flat
 * run, other broadcasts a "fivefold" nest of runs; in each run the first
 * len - len % 16 elements take the vector form, the rest the scalar form.
 *
 * Operand k has bcast_rank axes bcast_shape[k] (padded with leading 1s); its
 * leading extent is multiplied by the batch when bcast_batched[k] is set, so
 * the runs are those LiteRT computes for the batch actually run. */
#include "internal.h"

/* LiteRT's ProcessBroadcastShapes on the shapes at `batch`: 0 for equal
 * shapes (y[4] is then the flat size), 1 for fivefold (y filled, *swap when
 * the second operand is the broadcast one), -1 for the generic case. */
int32_t edged_mul_broadcast(const edged_op* op, int32_t batch, int64_t y[5], int* swap) {
  const int32_t rank = op->bcast_rank;
  int64_t s[2][EDGED_MUL_MAX_RANK];
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

static int8_t mul_vector(int32_t product, const edged_op* op) {
  const int32_t left = op->shift > 0 ? op->shift : 0, right = op->shift > 0 ? 0 : -op->shift;
  const int32_t scaled = edged_rdbypot(edged_srdhm((int32_t)((uint32_t)product << left), op->multiplier), right);
  const int32_t narrowed = edged_clamp(scaled, INT16_MIN, INT16_MAX); /* vqmovn_s32 */
  const int16_t shifted = (int16_t)(uint16_t)(uint32_t)(narrowed + op->output_offset); /* int16 add wraps */
  return (int8_t)edged_clamp(edged_clamp(shifted, -128, 127), op->act_min, op->act_max);
}

static int8_t mul_scalar(int32_t product, const edged_op* op) {
  const int32_t v = edged_wadd(edged_mbqm(product, op->multiplier, op->shift), op->output_offset);
  return (int8_t)edged_clamp(v, op->act_min, op->act_max);
}

/* One run: LiteRT's MulElementwise (step_a = 1) or MulSimpleBroadcast (step_a = 0). */
static void mul_run(const edged_op* op, int64_t n, const int8_t* a, int32_t off_a, int64_t step_a,
                    const int8_t* b, int32_t off_b, int8_t* out) {
  const int64_t body = n - n % 16;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t product = (a[i * step_a] + off_a) * (b[i] + off_b);
    out[i] = i < body ? mul_vector(product, op) : mul_scalar(product, op);
  }
}

void edged_mul(const edged_op* op, int32_t batch) {
  int64_t y[5];
  int swap;
  const int32_t kind = edged_mul_broadcast(op, batch, y, &swap);
  const int8_t* in0 = (const int8_t*)op->in[0];
  const int8_t* in1 = (const int8_t*)op->in[1];
  int8_t* out = (int8_t*)op->out;
  if (kind == 0) {
    mul_run(op, y[4], in0, op->in_offset[0], 1, in1, op->in_offset[1], out);
    return;
  }
  if (kind < 0) return; /* rejected by validation */
  /* a: the operand broadcast along y3 (LiteRT's input1 after its swap). */
  const int8_t* a = swap ? in1 : in0;
  const int8_t* b = swap ? in0 : in1;
  const int32_t off_a = op->in_offset[swap ? 1 : 0], off_b = op->in_offset[swap ? 0 : 1];
  const int64_t run = y[4] > 1 ? y[4] : y[3];
  const int8_t* b_reset = b;
  for (int64_t i0 = 0; i0 < y[0]; ++i0) {
    const int8_t* b_ptr = b_reset;
    for (int64_t i1 = 0; i1 < y[1]; ++i1) {
      b_ptr = b_reset;
      for (int64_t i2 = 0; i2 < y[2]; ++i2) {
        if (y[4] > 1) {
          for (int64_t i3 = 0; i3 < y[3]; ++i3) {
            mul_run(op, run, a, off_a, 1, b_ptr, off_b, out);
            b_ptr += run;
            out += run;
          }
          a += y[4];
        } else {
          mul_run(op, run, a, off_a, 0, b_ptr, off_b, out);
          b_ptr += run;
          out += run;
          a += 1;
        }
      }
    }
    b_reset = b_ptr;
  }
}

/* The descriptor describes memory the loops stay inside of: shapes that
 * broadcast, strides equal to the per-sample sizes, and a fivefold or flat
 * pattern (checked at batch 1 and 2: every larger batch has the pattern of 2). */
int edged_mul_valid(const edged_op* op) {
  const int32_t rank = op->bcast_rank;
  if (rank < 1 || rank > EDGED_MUL_MAX_RANK || op->out == NULL || op->out_stride < 0) return 0;
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
  if (op->act_min < -128 || op->act_max > 127 || op->act_min > op->act_max) return 0;
  if (op->shift < -31 || op->shift > 30 || op->multiplier < 0) return 0;
  for (int k = 0; k < 2; ++k)
    if (op->in_offset[k] <= -256 || op->in_offset[k] >= 256) return 0;
  int64_t y[5];
  int swap;
  return edged_mul_broadcast(op, 1, y, &swap) >= 0 && edged_mul_broadcast(op, 2, y, &swap) >= 0;
}
