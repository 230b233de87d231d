/* Requantization of int32 accumulators on AArch64 NEON, shared by the NEON
 * and NEON dot-product GEMMs. Include only inside `#if defined(__aarch64__)`.
 *
 * Bit-exact with edged_mbqm() / edged_mbqm_rhu(): vqrdmulh is exactly
 * gemmlowp's SaturatingRoundingDoublingHighMul (floor((2ab + 2^31) / 2^32),
 * saturating only INT32_MIN^2), and the final shift uses the scalar code's
 * mask/threshold form so one code path serves both tie rules (vrshl alone
 * could only do ties-up).
 */
#ifndef EDGED_NEON_REQUANT_H
#define EDGED_NEON_REQUANT_H

#include <arm_neon.h>

#include "internal.h"

typedef struct {
  int32x4_t mult, left, neg_right, rmask, rthresh;
  int64x2_t single_lo, single_hi; /* shift - 31: vrshl's count for a single rounding */
} edged_rq4;

/* Parameters of channels o..o+3; channels at or past n get multiplier 0 and
 * are never stored. Copies through a small array so we never read past the
 * caller's per-channel arrays. */
static inline void edged_rq4_load(edged_rq4* p, const edged_requant* rq, size_t o, size_t n) {
  int32_t mult[4] = {0, 0, 0, 0}, shift[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < 4 && o + i < n; ++i) {
    mult[i] = rq->multiplier[o + i];
    shift[i] = rq->shift[o + i];
  }
  const int32x4_t s = vld1q_s32(shift);
  const int32x4_t zero = vdupq_n_s32(0);
  p->mult = vld1q_s32(mult);
  p->left = vmaxq_s32(s, zero);
  p->neg_right = vminq_s32(s, zero); /* vshl by a negative count shifts right */
  /* In uint32: 2^31 - 1 for a shift of -31 must not be a signed overflow. */
  const uint32x4_t one_u = vdupq_n_u32(1);
  p->rmask = vreinterpretq_s32_u32(vsubq_u32(vshlq_u32(one_u, vnegq_s32(p->neg_right)), one_u));
  p->rthresh = vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(p->rmask), 1));
  const int32x4_t total = vsubq_s32(s, vdupq_n_s32(31));
  p->single_lo = vmovl_s32(vget_low_s32(total));
  p->single_hi = vmovl_high_s32(total);
}

/* edged_mbqm_single on 4 lanes: the exact 64-bit products, one rounding
 * right shift by 31 - shift (vrshl: ties up), saturating narrow. */
static inline int32x4_t edged_rq4_single(const edged_rq4* p, int32x4_t acc) {
  const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(acc), vget_low_s32(p->mult)), p->single_lo);
  const int64x2_t hi = vrshlq_s64(vmull_high_s32(acc, p->mult), p->single_hi);
  return vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
}

static inline int32x4_t edged_rq4_apply(const edged_rq4* p, int32x4_t acc, const edged_requant* rq) {
  if (rq->single_rounding) {
    int32x4_t v = vaddq_s32(edged_rq4_single(p, acc), vdupq_n_s32(rq->output_offset));
    v = vmaxq_s32(v, vdupq_n_s32(rq->act_min));
    return vminq_s32(v, vdupq_n_s32(rq->act_max));
  }
  /* vshl (not vqshl) wraps like TFLite's int32 x * (1 << left_shift). */
  const int32x4_t x = vshlq_s32(acc, p->left);
  const int32x4_t r = vqrdmulhq_s32(x, p->mult);
  const int32x4_t rem = vandq_s32(r, p->rmask);
  /* Comparisons give all-ones (-1) for true: subtracting adds one. */
  const uint32x4_t neg = vandq_u32(vcltzq_s32(r), vdupq_n_u32(rq->rhaz ? UINT32_MAX : 0u));
  const int32x4_t thresh = vsubq_s32(p->rthresh, vreinterpretq_s32_u32(neg)); /* RHAZ only */
  int32x4_t v = vshlq_s32(r, p->neg_right);
  v = vsubq_s32(v, vreinterpretq_s32_u32(vcgtq_s32(rem, thresh)));
  v = vaddq_s32(v, vdupq_n_s32(rq->output_offset));
  v = vmaxq_s32(v, vdupq_n_s32(rq->act_min));
  return vminq_s32(v, vdupq_n_s32(rq->act_max));
}

/* Narrows up to 16 clamped int32 lanes (4 vectors) and stores `count` bytes. */
static inline void edged_store_s8x16(const int32x4_t v[4], int8_t* dst, size_t count) {
  const int16x8_t lo = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
  const int16x8_t hi = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
  const int8x16_t b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
  if (count >= 16) {
    vst1q_s8(dst, b);
  } else {
    int8_t tmp[16];
    vst1q_s8(tmp, b);
    memcpy(dst, tmp, count);
  }
}

#endif /* EDGED_NEON_REQUANT_H */
