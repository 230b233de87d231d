/* MUL of two int8 tensors with broadcasting, as LiteRT's optimized int8
 * kernel runs it on x86 (see edged/ops/mul.py): equal shapes are one flat
 * run, other broadcasts a "fivefold" nest of runs; in each run the first
 * len - len % 16 elements take the vector form, the rest the scalar form.
 *
 * The runs are those LiteRT computes for the batch actually run (see
 * broadcast.c). */
#include "internal.h"

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

/* One run: LiteRT's MulElementwise (step_a = 1) or MulSimpleBroadcast
 * (step_a = 0); the product commutes, only the offsets follow the operands. */
static void mul_run(const edged_op* op, int64_t n, const int8_t* a, int64_t step_a, const int8_t* b,
                    int8_t* out, int swapped) {
  const int32_t off_a = op->in_offset[swapped ? 1 : 0], off_b = op->in_offset[swapped ? 0 : 1];
  const int64_t body = n - n % 16;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t product = (a[i * step_a] + off_a) * (b[i] + off_b);
    out[i] = i < body ? mul_vector(product, op) : mul_scalar(product, op);
  }
}

void edged_mul(const edged_op* op, int32_t batch) { edged_bcast_run_tabled(op, batch, mul_run); }

int edged_mul_valid(const edged_op* op) {
  if (op->act_min < -128 || op->act_max > 127 || op->act_min > op->act_max) return 0;
  if (op->shift < -31 || op->shift > 30 || op->multiplier < 0) return 0;
  for (int k = 0; k < 2; ++k)
    if (op->in_offset[k] <= -256 || op->in_offset[k] >= 256) return 0;
  return edged_bcast_valid(op);
}
