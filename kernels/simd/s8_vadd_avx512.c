/* ADD of two same-shape int8 tensors, LiteRT's vector body, for x86-64 with
 * AVX-512 (F + BW + VL): 16 elements per step in int32 lanes, bit-exact with the
 * body form of kernels/ref/add.c; the arithmetic of s8_vadd_avx2.c on twice
 * the lanes, with mask registers for the rounding corrections. The caller
 * runs the tail (n % 16 elements) in the reference form.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl")))

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

/* srdhm16(a << sh, m) for |a| <= 256 and 15 <= sh <= 23 (so a << sh cannot
 * wrap), in 32-bit lanes. With S = 31 - sh (8..16) it is
 * floor((a*m + 2^(S-1)) / 2^S), and splitting m = mh * 2^16 + ml keeps both
 * partial products in int32 (|a*mh| < 2^24, |a*ml| < 2^25):
 *   (a*mh << (16 - S)) + ((a*ml + 2^(S-1)) >> S)
 * exactly, as a*mh*2^16 is a multiple of 2^S. Two vpmulld instead of the
 * even/odd 64-bit products. */
AVX512_INLINE __m512i scale_small(__m512i a, __m512i mh, __m512i ml, __m512i round, int32_t s) {
  const __m512i hi = _mm512_slli_epi32(_mm512_mullo_epi32(a, mh), (unsigned)(16 - s));
  return _mm512_add_epi32(hi, _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(a, ml), round), (unsigned)s));
}

AVX512_INLINE int small_ok(int32_t sh) { return sh >= 15 && sh <= 23; }

AVX512_TARGET size_t edged_s8_vadd_avx512(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y,
                                          size_t body) {
  const __m512i off0 = _mm512_set1_epi32(op->in_offset[0]), off1 = _mm512_set1_epi32(op->in_offset[1]);
  const int32_t sh0 = op->left_shift + op->in_shift[0], sh1 = op->left_shift + op->in_shift[1];
  /* scale_small needs the operands within [-256, 256] after their offsets. */
  const int small = small_ok(sh0) && small_ok(sh1) && op->in_offset[0] >= -128 && op->in_offset[0] <= 128 &&
                    op->in_offset[1] >= -128 && op->in_offset[1] <= 128;
  const int32_t s0 = 31 - sh0, s1 = 31 - sh1;
  const __m512i mh0 = _mm512_set1_epi32((int32_t)((uint32_t)op->in_multiplier[0] >> 16));
  const __m512i ml0 = _mm512_set1_epi32(op->in_multiplier[0] & 0xFFFF);
  const __m512i mh1 = _mm512_set1_epi32((int32_t)((uint32_t)op->in_multiplier[1] >> 16));
  const __m512i ml1 = _mm512_set1_epi32(op->in_multiplier[1] & 0xFFFF);
  const __m512i round0 = _mm512_set1_epi32(small ? 1 << (s0 - 1) : 0);
  const __m512i round1 = _mm512_set1_epi32(small ? 1 << (s1 - 1) : 0);
  const __m256i out_off16 = _mm256_set1_epi16((short)op->output_offset);
  const __m128i lo8 = _mm_set1_epi8((char)(op->act_min > -128 ? op->act_min : -128));
  const __m128i hi8 = _mm_set1_epi8((char)(op->act_max < 127 ? op->act_max : 127));
  size_t i = 0;
  for (; i + 16 <= body; i += 16) {
    const __m512i a = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(x0 + i))), off0);
    const __m512i c = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(x1 + i))), off1);
    __m512i sa, sc;
    if (small) {
      sa = scale_small(a, mh0, ml0, round0, s0);
      sc = scale_small(c, mh1, ml1, round1, s1);
    } else {
      sa = srdhm16(shift_any16(a, sh0), op->in_multiplier[0]);
      sc = srdhm16(shift_any16(c, sh1), op->in_multiplier[1]);
    }
    const __m512i raw = rdbypot16(srdhm16(_mm512_add_epi32(sa, sc), op->multiplier), -op->shift);
    /* vmovn_s32 truncates to int16 (vpmovdw), the offset is added in int16
     * wrapping (vpaddw), vqmovn_s16 saturates to int8 (vpmovswb); then the
     * activation clamp, whose bounds lie inside int8. */
    const __m256i v16 = _mm256_add_epi16(_mm512_cvtepi32_epi16(raw), out_off16);
    const __m128i v8 = _mm256_cvtsepi16_epi8(v16);
    _mm_storeu_si128((__m128i*)(y + i), _mm_min_epi8(_mm_max_epi8(v8, lo8), hi8));
  }
  return i;
}

#else
typedef int edged_s8_vadd_avx512_unused;
#endif
