/* ADD of two same-shape int8 tensors, LiteRT's vector body, for x86-64 with
 * AVX-512 (F + BW): 16 elements per step in int32 lanes, bit-exact with the
 * body form of kernels/ref/add.c; the arithmetic of s8_vadd_avx2.c on twice
 * the lanes, with mask registers for the rounding corrections. The caller
 * runs the tail (n % 16 elements) in the reference form.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw")))

/* NEON vshl by a uniform count: a wrapping left shift, or for a negative
 * count a truncating arithmetic right shift, either capped at 31. */
AVX512_INLINE __m512i shift_any16(__m512i x, int32_t s) {
  if (s >= 0) return _mm512_sll_epi32(x, _mm_cvtsi32_si128(s > 31 ? 31 : s));
  return _mm512_sra_epi32(x, _mm_cvtsi32_si128(-s > 31 ? 31 : -s));
}

/* gemmlowp SaturatingRoundingDoublingHighMul by a uniform multiplier:
 * floor((x*m + 2^30) / 2^31) per lane (see s8_vadd_avx2.c for why the
 * negative products agree). */
AVX512_INLINE __m512i srdhm16(__m512i x, int32_t m) {
  const __m512i mult = _mm512_set1_epi32(m);
  const __m512i round = _mm512_set1_epi64(INT64_C(1) << 30);
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, mult), round);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), mult), round);
  even = _mm512_srli_epi64(even, 31);
  odd = _mm512_slli_epi64(odd, 1);
  __m512i r = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
  if (m == INT32_MIN) { /* INT32_MIN * INT32_MIN -> INT32_MAX */
    const __mmask16 sat = _mm512_cmpeq_epi32_mask(x, mult);
    r = _mm512_mask_xor_epi32(r, sat, r, _mm512_set1_epi32(-1));
  }
  return r;
}

/* gemmlowp RoundingDivideByPOT by a uniform exponent in [0, 31]. */
AVX512_INLINE __m512i rdbypot16(__m512i x, int32_t e) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i mask = _mm512_set1_epi32((int32_t)((INT64_C(1) << e) - 1));
  const __m512i rem = _mm512_and_si512(x, mask);
  __m512i thresh = _mm512_srai_epi32(mask, 1);
  thresh = _mm512_mask_add_epi32(thresh, _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512()), thresh, one);
  const __m512i shifted = _mm512_sra_epi32(x, _mm_cvtsi32_si128(e));
  return _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(rem, thresh), shifted, one);
}

/* The sign-extended low 16 bits of each lane. */
AVX512_INLINE __m512i low16(__m512i v) { return _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 16); }

AVX512_TARGET size_t edged_s8_vadd_avx512(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y,
                                          size_t body) {
  const __m512i off0 = _mm512_set1_epi32(op->in_offset[0]), off1 = _mm512_set1_epi32(op->in_offset[1]);
  const int32_t sh0 = op->left_shift + op->in_shift[0], sh1 = op->left_shift + op->in_shift[1];
  const __m512i out_off = _mm512_set1_epi32(op->output_offset);
  const __m512i lo = _mm512_set1_epi32(op->act_min > -128 ? op->act_min : -128);
  const __m512i hi = _mm512_set1_epi32(op->act_max < 127 ? op->act_max : 127);
  size_t i = 0;
  for (; i + 16 <= body; i += 16) {
    const __m512i a = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(x0 + i))), off0);
    const __m512i c = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(x1 + i))), off1);
    const __m512i sa = srdhm16(shift_any16(a, sh0), op->in_multiplier[0]);
    const __m512i sc = srdhm16(shift_any16(c, sh1), op->in_multiplier[1]);
    const __m512i raw = rdbypot16(srdhm16(_mm512_add_epi32(sa, sc), op->multiplier), -op->shift);
    /* vmovn_s32 truncates to int16, the offset is added in int16 (wrapping),
     * vqmovn_s16 saturates to int8; then the activation clamp, whose bounds
     * lie inside int8, so one clamp does both. */
    __m512i v = low16(_mm512_add_epi32(low16(raw), out_off));
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    _mm_storeu_si128((__m128i*)(y + i), _mm512_cvtepi32_epi8(v));
  }
  return i;
}

#else
typedef int edged_s8_vadd_avx512_unused;
#endif
