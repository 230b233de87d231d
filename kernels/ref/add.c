/* ADD of two same-shape int8 tensors with TFLite's rescaling to a common
 * scale (inputs shifted left by left_shift = 20, each scaled by a multiplier
 * below one, summed, scaled to the output).
 *
 * LiteRT's optimized kernel runs 16 elements per NEON(-on-SSE) iteration over
 * the flat tensor, batch included, with a different arithmetic: the input
 * left shift and its (non-positive) input shift are merged into one shift
 * (so no rounding there) and the high multiplies round ties up. The last
 * n % 16 elements take the scalar reference path. Both are reproduced.
 *
 * With bcast_rank set (a broadcast or a constant operand) the same forms run
 * over LiteRT's broadcast runs (broadcast.c); runs against one broadcast value
 * (AddScalarBroadcast) have their own SIMD form, in blocks of 8: each input
 * is shifted left, high-multiplied, then shifted by its own (non-positive)
 * shift, flooring.
 */
#include "internal.h"

/* NEON vshl semantics: a left shift that wraps, or for a negative count a
 * truncating arithmetic right shift. */
static inline int32_t shift_any(int32_t x, int32_t s) {
  if (s >= 0) return (int32_t)((uint32_t)x << (s > 31 ? 31 : s));
  return x >> (-s > 31 ? 31 : -s);
}

void edged_add_broadcast(const edged_op* op, int32_t batch);

/* -v when `negate` (wrapping), else v. */
static int32_t signed_by(int32_t v, uint32_t negate) {
  return negate ? (int32_t)(0u - (uint32_t)v) : v;
}

/* One element of the same-shape form: the vector body (LiteRT's 16-wide
 * NEON(-on-SSE) arithmetic) or the reference tail. */
static int8_t add_one(const edged_op* op, int32_t x0, int32_t x1, int in_body, uint32_t neg0, uint32_t neg1) {
  const int32_t a = x0 + op->in_offset[0], c = x1 + op->in_offset[1];
  const int32_t m0 = op->in_multiplier[0], m1 = op->in_multiplier[1];
  const int32_t s0 = op->in_shift[0], s1 = op->in_shift[1], ls = op->left_shift;
  int32_t v;
  if (in_body) {
    const int32_t sa = edged_srdhm(shift_any(a, ls + s0), m0);
    const int32_t sc = edged_srdhm(shift_any(c, ls + s1), m1);
    const int32_t sum = edged_srdhm(edged_wadd(sa, sc), op->multiplier);
    const int32_t raw = edged_rdbypot(sum, -op->shift); /* run.c: shift <= 0 */
    /* vmovn_s32 truncates to int16, the offset is added in int16 (wrapping),
     * then vqmovn_s16 saturates to int8: far out-of-range sums wrap. */
    const int16_t narrowed = (int16_t)(uint16_t)(uint32_t)raw;
    const int16_t shifted = (int16_t)(uint16_t)((uint32_t)(uint16_t)narrowed + (uint32_t)op->output_offset);
    v = edged_clamp(shifted, -128, 127);
  } else {
    const int32_t sa = edged_mbqm(shift_any(a, ls), m0, s0);
    const int32_t sc = edged_mbqm(shift_any(c, ls), m1, s1);
    const int32_t sum = edged_wadd(signed_by(sa, neg0), signed_by(sc, neg1));
    const int32_t raw = edged_mbqm(sum, op->multiplier, op->shift);
    v = edged_wadd(raw, op->output_offset);
  }
  return (int8_t)edged_clamp(v, op->act_min, op->act_max);
}

void edged_add(const edged_op* op, int32_t batch) {
  if (op->bcast_rank > 0) {
    edged_add_broadcast(op, batch);
    return;
  }
  const size_t count = (size_t)op->count;
  const size_t n = count * (size_t)batch;
  const size_t body = op->mode != EDGED_ADD ? 0 : n - n % 16;
  /* SUB: the subtracted operand's scaled value is negated (wrapping, as int32 subtraction). */
  const uint32_t neg0 = op->mode == EDGED_SUB_FIRST, neg1 = op->mode == EDGED_SUB_SECOND;
  const int flat = batch == 1 || ((size_t)op->in_stride[0] == count && (size_t)op->in_stride[1] == count &&
                                  (size_t)op->out_stride == count);
#if defined(__x86_64__) || defined(__aarch64__)
#if defined(__x86_64__)
  const uint32_t cpu = edged_cpu_variants();
  const int vector = cpu & ((1u << EDGED_VARIANT_AVX2) | (1u << EDGED_VARIANT_AVX512VNNI));
#else
  const int vector = 1; /* NEON is part of every aarch64 core */
#endif
  if (flat && body > 0 && vector) {
    const int8_t* x0 = (const int8_t*)op->in[0];
    const int8_t* x1 = (const int8_t*)op->in[1];
    int8_t* y = (int8_t*)op->out;
#if defined(__x86_64__)
    size_t i = (cpu & (1u << EDGED_VARIANT_AVX512VNNI)) ? edged_s8_vadd_avx512(op, x0, x1, y, body)
                                                         : edged_s8_vadd_avx2(op, x0, x1, y, body);
#else
    size_t i = edged_s8_vadd_neon(op, x0, x1, y, body);
#endif
    for (; i < n; ++i) y[i] = add_one(op, x0[i], x1[i], i < body, neg0, neg1);
    return;
  }
#else
  (void)flat;
#endif
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x0 = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    const int8_t* x1 = (const int8_t*)op->in[1] + (size_t)b * (size_t)op->in_stride[1];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    const size_t flat0 = (size_t)b * count;
    for (size_t i = 0; i < count; ++i) y[i] = add_one(op, x0[i], x1[i], flat0 + i < body, neg0, neg1);
  }
}

/* The scaled value of operand k on its own: both SIMD forms (merged shift
 * before the high multiply, or the AddScalarBroadcast order) and the
 * reference form. */
static int32_t scaled_elementwise(const edged_op* op, int k, int32_t x) {
  return edged_srdhm(shift_any(x + op->in_offset[k], op->left_shift + op->in_shift[k]), op->in_multiplier[k]);
}

static int32_t scaled_scalar_broadcast(const edged_op* op, int k, int32_t x) {
  return shift_any(edged_srdhm(shift_any(x + op->in_offset[k], op->left_shift), op->in_multiplier[k]),
                   op->in_shift[k]);
}

static int32_t scaled_reference(const edged_op* op, int k, int32_t x) {
  return edged_mbqm(shift_any(x + op->in_offset[k], op->left_shift), op->in_multiplier[k], op->in_shift[k]);
}

static int8_t add_simd_output(const edged_op* op, int32_t sum) {
  const int32_t raw = edged_rdbypot(edged_srdhm(sum, op->multiplier), -op->shift);
  const int16_t narrowed = (int16_t)(uint16_t)(uint32_t)raw;
  const int16_t shifted = (int16_t)(uint16_t)((uint32_t)(uint16_t)narrowed + (uint32_t)op->output_offset);
  return (int8_t)edged_clamp(edged_clamp(shifted, -128, 127), op->act_min, op->act_max);
}

static void add_run(const edged_op* op, int64_t n, const int8_t* a, int64_t step_a, const int8_t* b,
                    int8_t* out, int swapped) {
  const int ka = swapped ? 1 : 0, kb = 1 - ka;
  const int64_t body = op->mode != EDGED_ADD ? 0 : n - n % (step_a ? 16 : 8);
  const uint32_t neg_a = op->mode == (ka ? EDGED_SUB_SECOND : EDGED_SUB_FIRST);
  const uint32_t neg_b = op->mode == (kb ? EDGED_SUB_SECOND : EDGED_SUB_FIRST);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t xa = a[i * step_a], xb = b[i];
    if (i < body) {
      const int32_t sum = step_a
          ? edged_wadd(scaled_elementwise(op, ka, xa), scaled_elementwise(op, kb, xb))
          : edged_wadd(scaled_scalar_broadcast(op, ka, xa), scaled_scalar_broadcast(op, kb, xb));
      out[i] = add_simd_output(op, sum);
    } else {
      const int32_t sum = edged_wadd(signed_by(scaled_reference(op, ka, xa), neg_a),
                                     signed_by(scaled_reference(op, kb, xb), neg_b));
      const int32_t v = edged_wadd(edged_mbqm(sum, op->multiplier, op->shift), op->output_offset);
      out[i] = (int8_t)edged_clamp(v, op->act_min, op->act_max);
    }
  }
}

void edged_add_broadcast(const edged_op* op, int32_t batch) { edged_bcast_run_tabled(op, batch, add_run); }
