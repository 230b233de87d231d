/* Requantization of int32 accumulators with AVX2, shared by the AVX2 GEMM
 * and depthwise kernels. Include only inside `#if defined(__x86_64__)`.
 * Bit-exact with edged_mbqm() (rq->rhaz) / edged_mbqm_rhu(). */
#ifndef EDGED_AVX2_REQUANT_H
#define EDGED_AVX2_REQUANT_H

#include <immintrin.h>

#include "internal.h"

#define AVX2_TARGET __attribute__((target("avx2")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2")))

/* acc += x in place. With _mm256_add_epi32, gcc 12 adds a multi-row tile's
 * products into scratch registers and copies them back to the accumulators,
 * which runs a 16-register tile out of registers: one accumulator then goes
 * through the stack on every step of the depth loop. */
AVX2_INLINE __m256i edged_acc_add(__m256i acc, __m256i x) {
  __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(x));
  return acc;
}

/* Requantization constants of 8 output channels, computed once per block. */
typedef struct {
  __m256i mult, mult_odd, left, right, right_m1, round_bit, rmask, rthresh;
  size_t valid; /* channels of these 8 that exist */
  int has_left; /* some shift > 0: the left shift is needed */
  int fast;     /* no INT32_MIN multiplier: SRDHM cannot saturate */
} rq8;

AVX2_INLINE void rq8_load(rq8* p, const edged_requant* rq, size_t o, size_t n) {
  const size_t valid = o >= n ? 0 : (n - o < 8 ? n - o : 8);
  /* vpmaskmovd never touches masked-off lanes, so we can stop at out_c. */
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)valid), lane);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  __m256i shift = zero;
  p->mult = zero;
  if (valid) {
    shift = _mm256_maskload_epi32(rq->shift + o, mask);
    p->mult = _mm256_maskload_epi32(rq->multiplier + o, mask);
  }
  p->mult_odd = _mm256_srli_epi64(p->mult, 32);
  p->left = _mm256_max_epi32(shift, zero);
  p->right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
  p->right_m1 = _mm256_max_epi32(_mm256_sub_epi32(p->right, one), zero);
  p->round_bit = _mm256_and_si256(_mm256_cmpgt_epi32(p->right, zero), one);
  p->rmask = _mm256_sub_epi32(_mm256_sllv_epi32(one, p->right), one);
  p->rthresh = _mm256_srli_epi32(p->rmask, 1);
  p->valid = valid;
  p->has_left = !_mm256_testz_si256(p->left, p->left);
  p->fast = _mm256_movemask_epi8(_mm256_cmpeq_epi32(p->mult, _mm256_set1_epi32(INT32_MIN))) == 0;
}

/* A single rounding (LiteRT's aarch64 semantics, for running them on x86):
 * lane by lane with the scalar code, as it is not this CPU's native form. */
AVX2_INLINE __m256i rq8_single(const rq8* p, __m256i acc, const edged_requant* rq) {
  int32_t a[8], m[8], left[8], right[8];
  _mm256_storeu_si256((__m256i*)a, acc);
  _mm256_storeu_si256((__m256i*)m, p->mult);
  _mm256_storeu_si256((__m256i*)left, p->left);
  _mm256_storeu_si256((__m256i*)right, p->right);
  for (int i = 0; i < 8; ++i)
    a[i] = edged_clamp(edged_wadd(edged_mbqm_single(a[i], m[i], left[i] - right[i]), rq->output_offset),
                       rq->act_min, rq->act_max);
  return _mm256_loadu_si256((const __m256i*)a);
}

/* MultiplyByQuantizedMultiplier on 8 lanes, bit-exact with edged_mbqm()
 * (rq->rhaz) or edged_mbqm_rhu(), then + output offset and clamp. */
AVX2_INLINE __m256i rq8_apply(const rq8* p, __m256i acc, const edged_requant* rq) {
  if (rq->single_rounding) return rq8_single(p, acc, rq);
  const __m256i x = p->has_left ? _mm256_sllv_epi32(acc, p->left) : acc;
  /* floor((x*m + 2^30) / 2^31) == gemmlowp's SRDHM; bits 31..62 of the 64-bit
   * sum are the answer, so logical 64-bit shifts are enough. */
  const __m256i round = _mm256_set1_epi64x(INT64_C(1) << 30);
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, p->mult), round);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), p->mult_odd), round);
  even = _mm256_srli_epi64(even, 31);
  odd = _mm256_slli_epi64(odd, 1);
  __m256i r = _mm256_blend_epi32(even, odd, 0xAA);
  if (!p->fast) {
    const __m256i int_min = _mm256_set1_epi32(INT32_MIN);
    const __m256i sat = _mm256_and_si256(_mm256_cmpeq_epi32(x, int_min), _mm256_cmpeq_epi32(p->mult, int_min));
    r = _mm256_xor_si256(r, sat); /* INT32_MIN -> INT32_MAX in the saturating lane */
  }

  __m256i v;
  if (!rq->rhaz) {
    /* Ties up: floor((r + 2^(e-1)) / 2^e) == (r >> e) + bit e-1 of r. */
    v = _mm256_add_epi32(_mm256_srav_epi32(r, p->right),
                         _mm256_and_si256(_mm256_srav_epi32(r, p->right_m1), p->round_bit));
  } else {
    /* gemmlowp's RoundingDivideByPOT: +1 where the remainder exceeds half,
     * an exact half of a negative value staying down. cmpgt yields -1 for
     * true, so subtracting it adds one. */
    const __m256i rem = _mm256_and_si256(r, p->rmask);
    const __m256i thresh = _mm256_sub_epi32(p->rthresh, _mm256_cmpgt_epi32(_mm256_setzero_si256(), r));
    v = _mm256_sub_epi32(_mm256_srav_epi32(r, p->right), _mm256_cmpgt_epi32(rem, thresh));
  }

  v = _mm256_add_epi32(v, _mm256_set1_epi32(rq->output_offset));
  v = _mm256_max_epi32(v, _mm256_set1_epi32(rq->act_min));
  return _mm256_min_epi32(v, _mm256_set1_epi32(rq->act_max));
}

AVX2_INLINE void store8(const rq8* p, __m256i v, int8_t* dst) {
  const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i b8 = _mm_packs_epi16(w16, w16);
  if (p->valid == 8) {
    _mm_storel_epi64((__m128i*)dst, b8);
  } else if (p->valid) {
    /* 1..7 bytes as two overlapping fixed-size stores: a variable-length
     * memcpy would be a library call per pixel on narrow layers. */
    int8_t tmp[16];
    const size_t n = p->valid;
    _mm_storeu_si128((__m128i*)tmp, b8);
    if (n >= 4) {
      memcpy(dst, tmp, 4);
      memcpy(dst + n - 4, tmp + n - 4, 4);
    } else if (n >= 2) {
      memcpy(dst, tmp, 2);
      memcpy(dst + n - 2, tmp + n - 2, 2);
    } else {
      dst[0] = tmp[0];
    }
  }
}

#endif /* EDGED_AVX2_REQUANT_H */
