/* ADD of two same-shape int8 tensors, LiteRT's vector body, for x86-64 with
 * AVX2: 8 elements per step in int32 lanes, bit-exact with the body form of
 * kernels/ref/add.c (merged input shifts, SRDHM, RoundingDivideByPOT, int16
 * truncation and wrapping offset, int8 saturation). The caller runs the
 * tail (n % 16 elements) in the reference form.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2")))

/* NEON vshl by a uniform count: a wrapping left shift, or for a negative
 * count a truncating arithmetic right shift, either capped at 31. */
AVX2_INLINE __m256i shift_any8(__m256i x, int32_t s) {
  if (s >= 0) return _mm256_sll_epi32(x, _mm_cvtsi32_si128(s > 31 ? 31 : s));
  return _mm256_sra_epi32(x, _mm_cvtsi32_si128(-s > 31 ? 31 : -s));
}

/* gemmlowp SaturatingRoundingDoublingHighMul by a uniform multiplier. */
AVX2_INLINE __m256i srdhm8(__m256i x, int32_t m) {
  const __m256i mult = _mm256_set1_epi32(m);
  const __m256i round = _mm256_set1_epi64x(INT64_C(1) << 30);
  /* floor((x*m + 2^30) / 2^31): gemmlowp's nudge for a positive product; a
   * negative product's nudge (1 - 2^30) with truncating division lands on
   * the same value, as kernels/simd/avx2_requant.h explains. */
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, mult), round);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), mult), round);
  even = _mm256_srli_epi64(even, 31);
  odd = _mm256_slli_epi64(odd, 1);
  __m256i r = _mm256_blend_epi32(even, odd, 0xAA);
  if (m == INT32_MIN) {
    const __m256i sat = _mm256_cmpeq_epi32(x, mult);
    r = _mm256_xor_si256(r, sat); /* INT32_MIN * INT32_MIN -> INT32_MAX */
  }
  return r;
}

/* gemmlowp RoundingDivideByPOT by a uniform exponent in [0, 31]. */
AVX2_INLINE __m256i rdbypot8(__m256i x, int32_t e) {
  const __m256i mask = _mm256_set1_epi32((int32_t)((INT64_C(1) << e) - 1));
  const __m256i rem = _mm256_and_si256(x, mask);
  const __m256i thresh = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1),
                                          _mm256_cmpgt_epi32(_mm256_setzero_si256(), x));
  const __m256i shifted = _mm256_sra_epi32(x, _mm_cvtsi32_si128(e));
  return _mm256_sub_epi32(shifted, _mm256_cmpgt_epi32(rem, thresh));
}

/* The sign-extended low 16 bits of each lane. */
AVX2_INLINE __m256i low16(__m256i v) { return _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 16); }

__attribute__((target("avx2"))) size_t edged_s8_vadd_avx2(const edged_op* op, const int8_t* x0,
                                                          const int8_t* x1, int8_t* y, size_t body) {
  const __m256i off0 = _mm256_set1_epi32(op->in_offset[0]), off1 = _mm256_set1_epi32(op->in_offset[1]);
  const int32_t sh0 = op->left_shift + op->in_shift[0], sh1 = op->left_shift + op->in_shift[1];
  const __m256i out_off = _mm256_set1_epi32(op->output_offset);
  const __m256i lo = _mm256_set1_epi32(op->act_min > -128 ? op->act_min : -128);
  const __m256i hi = _mm256_set1_epi32(op->act_max < 127 ? op->act_max : 127);
  size_t i = 0;
  for (; i + 8 <= body; i += 8) {
    const __m256i a = _mm256_add_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(x0 + i))), off0);
    const __m256i c = _mm256_add_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(x1 + i))), off1);
    const __m256i sa = srdhm8(shift_any8(a, sh0), op->in_multiplier[0]);
    const __m256i sc = srdhm8(shift_any8(c, sh1), op->in_multiplier[1]);
    const __m256i raw = rdbypot8(srdhm8(_mm256_add_epi32(sa, sc), op->multiplier), -op->shift);
    /* vmovn_s32 truncates to int16, the offset is added in int16 (wrapping),
     * vqmovn_s16 saturates to int8; then the activation clamp. */
    __m256i v = low16(_mm256_add_epi32(low16(raw), out_off));
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i*)(y + i), _mm_packs_epi16(w16, w16));
  }
  return i;
}

#else
typedef int edged_s8_vadd_avx2_unused;
#endif
