/* Requantization of int32 accumulators with AVX-512, shared by the AVX-512
 * VNNI dense and block-sparse GEMMs. Include only inside
 * `#if defined(__x86_64__)`. Bit-exact with edged_mbqm() (rq->rhaz) /
 * edged_mbqm_rhu(). */
#ifndef EDGED_AVX512_REQUANT_H
#define EDGED_AVX512_REQUANT_H

#include <immintrin.h>

#include "internal.h"

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define VNNI_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* acc += u8 x s8 dot products (vpdpbusd), accumulating in place. With the
 * intrinsic, gcc 12 copies each accumulator of a multi-row tile to a scratch
 * register and back around every vpdpbusd; where moves are not eliminated
 * (AMD Zen 5) those copies lengthen every accumulation chain by two cycles. */
VNNI_INLINE __m512i edged_dpbusd(__m512i acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "vm"(s8));
  return acc;
}

/* Per-block requantization constants, loaded once per 16 channels.
 *
 * Fast path: both roundings of MultiplyByQuantizedMultiplier fold into one
 * 64-bit shift. With p = (x << left) * m and right shift e = -shift >= 0:
 *   SRDHM      q = floor((p + 2^30) / 2^31)
 *   RHU        floor((q + 2^(e-1)) / 2^e) = floor((p + 2^30 + 2^(30+e)) / 2^(31+e))
 *   RHAZ       the same minus 2^31 in the numerator when q < 0, i.e. p < -2^30
 * (nested floor divisions by powers of two compose; the e = 0 terms vanish).
 * The 64-bit numerator cannot overflow and vpsravq divides it exactly. Two
 * more terms ride along: the output offset z, as z * 2^(31+e) in the
 * numerator (one add fewer per vector), and, with e >= 1, the odd lanes are
 * shifted by e - 1 only, which leaves their quotients in the high dwords for
 * a blend with the even lanes' low dwords. Blocks outside what that covers
 * take the step-by-step path: SRDHM's saturation at INT32_MIN * INT32_MIN
 * (a multiplier of INT32_MIN, never produced by TFLite), e = 0, or
 * |z| * 2^(31+e) > 2^60, where the offset term would crowd int64 (TFLite's
 * layers have e around 6..18 and |z| <= 128). */
typedef struct {
  __m512i mult, mult_odd;                     /* both paths */
  __m512i add_even, add_odd, sh_even, sh_odd; /* fast path */
  __m512i adj, neg_even, neg_odd;             /* fast path, RHAZ; zero where ties round up */
} rq16_fast;

typedef struct {
  rq16_fast f;
  __m512i left, right, rmask, rthresh; /* step-by-step path */
  __mmask16 store_mask;
  int fast, has_left;
  int up; /* fast, ties up, two roundings (rq16_is_up): the RHAZ and step-by-step fields go unused */
} rq16;

/* The largest e the fast path takes with output offset z: |z| < 2^bits, so
 * |z| * 2^(31+e) <= 2^60 for e <= 29 - bits (negative: none). */
static inline int rq16_fast_max_e(int32_t z) {
  const uint64_t z_abs = z < 0 ? (uint64_t)(-(int64_t)z) : (uint64_t)z;
  return 29 - (z_abs ? 64 - __builtin_clzll(z_abs) : 0);
}

/* Constants of channels o .. o+valid-1 (valid in 1..16); lanes past `valid`
 * get zeros and are never stored. */
VNNI_INLINE void rq16_init(rq16* p, const edged_requant* rq, size_t o, size_t valid) {
  const __mmask16 m = (__mmask16)((1u << valid) - 1u);
  /* Masked loads: the multiplier arrays end at out_c, not at the padding. */
  const __m512i shift = _mm512_maskz_loadu_epi32(m, rq->shift + o);
  const __m512i zero = _mm512_setzero_si512();
  const int32_t z = rq->output_offset;
  p->f.mult = _mm512_maskz_loadu_epi32(m, rq->multiplier + o);
  p->f.mult_odd = _mm512_srli_epi64(p->f.mult, 32);
  p->right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  p->store_mask = m;
  p->has_left = _mm512_cmpgt_epi32_mask(shift, zero) != 0;
  /* Lanes past `valid` (e = 0) are never stored and do not count. With every
   * e >= 1 no lane shifts left. */
  const __mmask16 e_ok = _mm512_mask_cmpgt_epi32_mask(m, p->right, zero) &
                         _mm512_mask_cmple_epi32_mask(m, p->right, _mm512_set1_epi32(rq16_fast_max_e(z)));
  p->fast = _mm512_cmpeq_epi32_mask(p->f.mult, _mm512_set1_epi32(INT32_MIN)) == 0 && e_ok == m;
  p->up = p->fast && !rq->rhaz && !rq->single_rounding;

  /* Per-lane 64-bit constants for the even and odd int32 lanes, with the
   * fast path's bounds: 2^30 + 2^(30+e) + z * 2^(31+e) = 2^30 + (2z + 1) *
   * 2^(30+e), below 2^61 in magnitude. */
  const __m512i e_even = _mm512_and_si512(p->right, _mm512_set1_epi64(0xFFFFFFFF));
  const __m512i e_odd = _mm512_srli_epi64(p->right, 32);
  const __m512i half = _mm512_set1_epi64(INT64_C(1) << 30);
  const __m512i odd_z = _mm512_set1_epi64(2 * (int64_t)z + 1);
  const __m512i thirty = _mm512_set1_epi64(30);
  p->f.add_even = _mm512_add_epi64(half, _mm512_sllv_epi64(odd_z, _mm512_add_epi64(e_even, thirty)));
  p->f.add_odd = _mm512_add_epi64(half, _mm512_sllv_epi64(odd_z, _mm512_add_epi64(e_odd, thirty)));
  p->f.sh_even = _mm512_add_epi64(e_even, _mm512_set1_epi64(31));
  p->f.sh_odd = _mm512_sub_epi64(e_odd, _mm512_set1_epi64(1));
  if (p->up) { /* the rest is never read; zeros (free to make) keep every field defined */
    p->f.adj = p->f.neg_even = p->f.neg_odd = p->left = p->rmask = p->rthresh = zero;
    return;
  }

  /* RHAZ adjusts where p < -2^30; the numerators compared carry the rest. */
  p->f.adj = _mm512_set1_epi64(INT64_C(1) << 31);
  p->f.neg_even = _mm512_sub_epi64(p->f.add_even, half);
  p->f.neg_odd = _mm512_sub_epi64(p->f.add_odd, half);
  p->left = _mm512_max_epi32(shift, zero);
  p->rmask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), p->right), _mm512_set1_epi32(1));
  p->rthresh = _mm512_srli_epi32(p->rmask, 1);
}

/* The fast constants for one multiplier m and shift (e = -shift) in every
 * lane, with output offset z, where the fast path covers them (returns 0
 * otherwise, f unset): rq16_init's arithmetic on uniform values, which the
 * compiler can keep in one register per constant. */
VNNI_INLINE int rq16_fast_uniform(rq16_fast* f, int32_t m, int32_t shift, int32_t z) {
  const int32_t e = -shift;
  if (m == INT32_MIN || e < 1 || e > rq16_fast_max_e(z)) return 0;
  const int64_t add = (INT64_C(1) << 30) + (2 * (int64_t)z + 1) * (INT64_C(1) << (30 + e));
  f->mult = f->mult_odd = _mm512_set1_epi64(m); /* the low dword of each 64-bit lane is m */
  f->add_even = f->add_odd = _mm512_set1_epi64(add);
  f->sh_even = _mm512_set1_epi64(31 + e);
  f->sh_odd = _mm512_set1_epi64(e - 1);
  f->adj = _mm512_set1_epi64(INT64_C(1) << 31);
  f->neg_even = f->neg_odd = _mm512_set1_epi64(add - (INT64_C(1) << 30));
  return 1;
}

/* Constants of the (up to) 16 channels from o of an out_c = n layer. */
VNNI_INLINE void rq16_load(rq16* p, const edged_requant* rq, size_t o, size_t n) {
  rq16_init(p, rq, o, n - o < 16 ? n - o : 16);
}

/* Step-by-step MultiplyByQuantizedMultiplier (SRDHM with saturation, then
 * the rounding shift), for blocks the fast identity does not cover. */
VNNI_INLINE __m512i rq16_scale_steps(const rq16* p, __m512i x, const edged_requant* rq) {
  /* SRDHM = floor((x*m + 2^30) / 2^31): bits 31..62 of each 64-bit sum. */
  const __m512i round = _mm512_set1_epi64(INT64_C(1) << 30);
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, p->f.mult), round);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), p->f.mult_odd), round);
  even = _mm512_srli_epi64(even, 31);
  odd = _mm512_slli_epi64(odd, 1);
  __m512i r = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
  const __m512i int_min = _mm512_set1_epi32(INT32_MIN);
  const __mmask16 sat = _mm512_cmpeq_epi32_mask(x, int_min) & _mm512_cmpeq_epi32_mask(p->f.mult, int_min);
  /* The INT32_MIN^2 lane came out as INT32_MIN; flipping all bits gives INT32_MAX. */
  r = _mm512_mask_xor_epi32(r, sat, r, _mm512_set1_epi32(-1));
  /* Rounding right shift: +1 where the remainder exceeds half; RHAZ also
   * keeps an exact half of a negative value down. */
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i rem = _mm512_and_si512(r, p->rmask);
  const __mmask16 neg = rq->rhaz ? _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512()) : 0;
  const __m512i thresh = _mm512_mask_add_epi32(p->rthresh, neg, p->rthresh, one);
  const __m512i v = _mm512_srav_epi32(r, p->right);
  return _mm512_mask_add_epi32(v, _mm512_cmpgt_epi32_mask(rem, thresh), v, one);
}

/* A single rounding (LiteRT's aarch64 semantics, for running them on x86):
 * lane by lane with the scalar code, as it is not this CPU's native form. */
VNNI_INLINE __m512i rq16_single(const rq16* p, __m512i acc) {
  int32_t a[16], m[16], left[16], right[16];
  _mm512_storeu_si512(a, acc);
  _mm512_storeu_si512(m, p->f.mult);
  _mm512_storeu_si512(left, p->left);
  _mm512_storeu_si512(right, p->right);
  for (int i = 0; i < 16; ++i) a[i] = edged_mbqm_single(a[i], m[i], left[i] - right[i]);
  return _mm512_loadu_si512(a);
}

/* The fast path of a block (rq16.fast): the quotient plus the output offset,
 * RHAZ (a constant where inlined with one) selecting gemmlowp's ties away
 * from zero over ties up. */
VNNI_INLINE __m512i rq16_scale_fast(const rq16_fast* f, __m512i x, const int rhaz) {
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, f->mult), f->add_even);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), f->mult_odd), f->add_odd);
  if (rhaz) {
    even = _mm512_mask_sub_epi64(even, _mm512_cmplt_epi64_mask(even, f->neg_even), even, f->adj);
    odd = _mm512_mask_sub_epi64(odd, _mm512_cmplt_epi64_mask(odd, f->neg_odd), odd, f->adj);
  }
  /* Even quotients in the low dwords, odd ones in the high dwords. */
  even = _mm512_srav_epi64(even, f->sh_even);
  odd = _mm512_srav_epi64(odd, f->sh_odd);
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
}

/* MultiplyByQuantizedMultiplier on 16 lanes, bit-exact with edged_mbqm() /
 * edged_mbqm_rhu(), then + output offset (wrapping int32), before the clamp. */
VNNI_INLINE __m512i rq16_scale(const rq16* p, __m512i acc, const edged_requant* rq) {
  const __m512i x = p->has_left ? _mm512_sllv_epi32(acc, p->left) : acc;
  __m512i v;
  if (rq->single_rounding) {
    v = _mm512_add_epi32(rq16_single(p, acc), _mm512_set1_epi32(rq->output_offset));
  } else if (p->fast) {
    v = rq->rhaz ? rq16_scale_fast(&p->f, x, 1) : rq16_scale_fast(&p->f, x, 0);
  } else {
    v = _mm512_add_epi32(rq16_scale_steps(p, x, rq), _mm512_set1_epi32(rq->output_offset));
  }
  return v;
}

/* rq16_scale, then the clamp and the narrowing to int8. */
VNNI_INLINE __m128i rq16_apply(const rq16* p, __m512i acc, const edged_requant* rq) {
  __m512i v = rq16_scale(p, acc, rq);
  v = _mm512_max_epi32(v, _mm512_set1_epi32(rq->act_min));
  v = _mm512_min_epi32(v, _mm512_set1_epi32(rq->act_max));
  return _mm512_cvtepi32_epi8(v);
}

/* The valid lanes of a narrowed block to dst. Full and half blocks store
 * 16 or 8 bytes plainly: a masked byte store is a slow multi-uop store on
 * Intel and AMD cores alike. */
VNNI_INLINE void rq16_put(const rq16* p, __m128i narrow, int8_t* dst) {
  if (p->store_mask == 0xFFFF) {
    _mm_storeu_si128((__m128i*)dst, narrow);
  } else if (p->store_mask == 0xFF) {
    _mm_storel_epi64((__m128i*)dst, narrow);
  } else {
    _mm_mask_storeu_epi8(dst, p->store_mask, narrow);
  }
}

/* The common block, in registers: the fast path without a left shift,
 * ties up (LiteRT's x86 FULLY_CONNECTED and CONV_2D), two-rounding mode.
 * Tile epilogues test rq16_is_up once per block and then requantize their
 * rows with rq16_up_apply, which has no branches and whose constants stay
 * in registers across the stores. */
typedef struct {
  rq16_fast f;
  __m512i lo, hi;
  int full_range; /* the clamp is [-128, 127]: the saturating narrow is all of it */
} rq16_up;

VNNI_INLINE int rq16_is_up(const rq16* p, const edged_requant* rq) {
  (void)rq; /* decided by rq16_init */
  return p->up;
}

VNNI_INLINE rq16_up rq16_up_of(const rq16* p, const edged_requant* rq) {
  rq16_up u;
  u.f = p->f;
  u.lo = _mm512_set1_epi32(rq->act_min);
  u.hi = _mm512_set1_epi32(rq->act_max);
  u.full_range = rq->act_min == -128 && rq->act_max == 127;
  return u;
}

/* rq16_apply for a block rq16_is_up accepts; FULL (a constant) when
 * u->full_range, which skips the clamp for vpmovsdb's saturation. */
VNNI_INLINE __m128i rq16_up_apply(const rq16_up* u, __m512i acc, const int full) {
  const __m512i v = rq16_scale_fast(&u->f, acc, 0);
  if (full) return _mm512_cvtsepi32_epi8(v);
  return _mm512_cvtepi32_epi8(_mm512_min_epi32(_mm512_max_epi32(v, u->lo), u->hi));
}

/* A depthwise block from channel c of n: LiteRT's x86 depthwise rounds ties
 * up below `body` (n - n % 8) and away from zero from there. lo holds the
 * ties-up constants, hi (loaded only when the block reaches past body) the
 * others, for the lanes in hi_lanes; up: the whole block takes the
 * branch-free form u. */
typedef struct {
  rq16 lo, hi;
  rq16_up u;
  const edged_requant *rq_lo, *rq_hi;
  __mmask16 hi_lanes;
  int up;
} rq16_split;

VNNI_INLINE void rq16_split_load(rq16_split* s, const edged_requant* rq_up, const edged_requant* rq_away,
                                 size_t c, size_t n, size_t body) {
  const size_t valid = n - c < 16 ? n - c : 16;
  const size_t up = body > c ? (body - c < valid ? body - c : valid) : 0;
  s->hi_lanes = (__mmask16)(((1u << valid) - 1u) & ~((1u << up) - 1u));
  s->rq_lo = rq_up;
  s->rq_hi = rq_away;
  rq16_load(&s->lo, rq_up, c, n);
  if (s->hi_lanes)
    rq16_load(&s->hi, rq_away, c, n);
  else
    s->hi = s->lo; /* unused; keeps it defined */
  s->up = !s->hi_lanes && rq16_is_up(&s->lo, rq_up);
  s->u = rq16_up_of(&s->lo, rq_up);
}

/* rq16_apply for a split block, each lane with its rounding. */
VNNI_INLINE __m128i rq16_split_apply(const rq16_split* s, __m512i acc) {
  if (s->up) return s->u.full_range ? rq16_up_apply(&s->u, acc, 1) : rq16_up_apply(&s->u, acc, 0);
  const __m128i v = rq16_apply(&s->lo, acc, s->rq_lo);
  return s->hi_lanes ? _mm_mask_blend_epi8(s->hi_lanes, v, rq16_apply(&s->hi, acc, s->rq_hi)) : v;
}

/* rq16_apply, then rq16_put. */
VNNI_INLINE void rq16_store(const rq16* p, __m512i acc, const edged_requant* rq, int8_t* dst) {
  rq16_put(p, rq16_apply(p, acc, rq), dst);
}

/* A tile's epilogue for one block: rows i < n are acc[i * acc_step] + t
 * (read unaligned, so acc may also be an int32 array), requantized and
 * stored at dst + i * dst_stride. The form is chosen once
 * for all rows, so its loop has no branches and keeps its constants in
 * registers (the int8 stores may alias anything reached through a pointer,
 * which would otherwise reload them after each store). */
VNNI_INLINE void rq16_store_rows(const rq16* p, const edged_requant* rq, const __m512i* acc, size_t acc_step,
                                 size_t n, __m512i t, int8_t* dst, size_t dst_stride) {
  if (rq16_is_up(p, rq)) {
    const rq16_up u = rq16_up_of(p, rq);
    if (u.full_range) {
      for (size_t i = 0; i < n; ++i)
        rq16_put(p, rq16_up_apply(&u, _mm512_add_epi32(_mm512_loadu_si512(acc + i * acc_step), t), 1),
                 dst + i * dst_stride);
    } else {
      for (size_t i = 0; i < n; ++i)
        rq16_put(p, rq16_up_apply(&u, _mm512_add_epi32(_mm512_loadu_si512(acc + i * acc_step), t), 0),
                 dst + i * dst_stride);
    }
    return;
  }
  const edged_requant rql = *rq;
  const rq16 pk = *p;
  for (size_t i = 0; i < n; ++i)
    rq16_store(&pk, _mm512_add_epi32(_mm512_loadu_si512(acc + i * acc_step), t), &rql, dst + i * dst_stride);
}

#endif /* EDGED_AVX512_REQUANT_H */
