/* ADD of two same-shape int8 tensors, LiteRT's vector body, for aarch64
 * NEON: 16 elements per step in four int32x4 lanes, bit-exact with the body
 * form of kernels/ref/add.c. On Arm this is LiteRT's own instruction
 * sequence: vshlq for the merged input shifts, vqrdmulhq for every high
 * multiply, RoundingDivideByPOT, vmovn to int16, the output offset added in
 * int16 (wrapping), vqmovn to int8, then the activation clamp. The caller runs
 * the tail (n % 16 elements) in the reference form.
 */
#include "internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* vshlq by a uniform count, capped at +-31 as the reference's shift_any is
 * (vshl itself gives 0 or the sign for counts of 32 and more). */
static inline int32x4_t shift_any4(int32x4_t x, int32_t s) {
  return vshlq_s32(x, vdupq_n_s32(s > 31 ? 31 : s < -31 ? -31 : s));
}

/* gemmlowp RoundingDivideByPOT by a uniform exponent in [0, 31]: the
 * remainder against half the divisor (one more for a negative x). */
static inline int32x4_t rdbypot4(int32x4_t x, int32_t e) {
  const int32x4_t mask = vdupq_n_s32((int32_t)((INT64_C(1) << e) - 1));
  const int32x4_t rem = vandq_s32(x, mask);
  const int32x4_t thresh = vaddq_s32(vshrq_n_s32(mask, 1), vreinterpretq_s32_u32(vshrq_n_u32(
                                         vreinterpretq_u32_s32(x), 31)));
  const int32x4_t shifted = vshlq_s32(x, vdupq_n_s32(-e));
  return vsubq_s32(shifted, vreinterpretq_s32_u32(vcgtq_s32(rem, thresh)));
}

typedef struct {
  int32x4_t off0, off1;
  int32_t sh0, sh1, m0, m1, m, e;
} add_consts;

static inline int32x4_t add4(const add_consts* k, int32x4_t a, int32x4_t c) {
  const int32x4_t sa = vqrdmulhq_n_s32(shift_any4(vaddq_s32(a, k->off0), k->sh0), k->m0);
  const int32x4_t sc = vqrdmulhq_n_s32(shift_any4(vaddq_s32(c, k->off1), k->sh1), k->m1);
  return rdbypot4(vqrdmulhq_n_s32(vaddq_s32(sa, sc), k->m), k->e);
}

size_t edged_s8_vadd_neon(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y, size_t body) {
  const add_consts k = {vdupq_n_s32(op->in_offset[0]), vdupq_n_s32(op->in_offset[1]),
                        op->left_shift + op->in_shift[0], op->left_shift + op->in_shift[1],
                        op->in_multiplier[0], op->in_multiplier[1], op->multiplier, -op->shift};
  const int16x8_t out_off = vdupq_n_s16((int16_t)(uint16_t)(uint32_t)op->output_offset);
  const int8x16_t lo = vdupq_n_s8((int8_t)(op->act_min > -128 ? op->act_min : -128));
  const int8x16_t hi = vdupq_n_s8((int8_t)(op->act_max < 127 ? op->act_max : 127));
  size_t i = 0;
  for (; i + 16 <= body; i += 16) {
    const int8x16_t a8 = vld1q_s8(x0 + i), c8 = vld1q_s8(x1 + i);
    const int16x8_t a_lo = vmovl_s8(vget_low_s8(a8)), a_hi = vmovl_s8(vget_high_s8(a8));
    const int16x8_t c_lo = vmovl_s8(vget_low_s8(c8)), c_hi = vmovl_s8(vget_high_s8(c8));
    const int32x4_t r0 = add4(&k, vmovl_s16(vget_low_s16(a_lo)), vmovl_s16(vget_low_s16(c_lo)));
    const int32x4_t r1 = add4(&k, vmovl_s16(vget_high_s16(a_lo)), vmovl_s16(vget_high_s16(c_lo)));
    const int32x4_t r2 = add4(&k, vmovl_s16(vget_low_s16(a_hi)), vmovl_s16(vget_low_s16(c_hi)));
    const int32x4_t r3 = add4(&k, vmovl_s16(vget_high_s16(a_hi)), vmovl_s16(vget_high_s16(c_hi)));
    const int16x8_t w_lo = vaddq_s16(vcombine_s16(vmovn_s32(r0), vmovn_s32(r1)), out_off);
    const int16x8_t w_hi = vaddq_s16(vcombine_s16(vmovn_s32(r2), vmovn_s32(r3)), out_off);
    const int8x16_t v = vcombine_s8(vqmovn_s16(w_lo), vqmovn_s16(w_hi));
    vst1q_s8(y + i, vminq_s8(vmaxq_s8(v, lo), hi));
  }
  return i;
}

#else
typedef int edged_s8_vadd_neon_unused;
#endif
