/* ADD of two same-shape int8 tensors, LiteRT's vector body, for x86-64 with
 * AVX-512 (run where the AVX-512 VNNI kernels run): 16 elements per step in
 * int32 lanes, bit-exact with the
 * body form of kernels/ref/add.c; the arithmetic of s8_vadd_avx2.c on twice
 * the lanes, with mask registers for the rounding corrections. The caller
 * runs the tail (n % 16 elements) in the reference form.
 *
 * Where the parameters allow (every real model's do), three shortcuts, each
 * exact: inputs scaled with two 32-bit multiplies (scale_small), the output
 * SRDHM and rounding shift done by the GEMMs' requantization
 * (rq16_scale_fast: one division of a 64-bit numerator that also carries
 * the output offset),
 * and 64 elements narrowed at a time by a word permute and one saturating
 * pack (narrow64).
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

/* NEON vshl by a uniform count: a wrapping left shift, or for a negative
 * count a truncating arithmetic right shift, either capped at 31. */
VNNI_INLINE __m512i shift_any16(__m512i x, int32_t s) {
  if (s >= 0) return _mm512_sll_epi32(x, _mm_cvtsi32_si128(s > 31 ? 31 : s));
  return _mm512_sra_epi32(x, _mm_cvtsi32_si128(-s > 31 ? 31 : -s));
}

/* gemmlowp SaturatingRoundingDoublingHighMul by a uniform multiplier:
 * floor((x*m + 2^30) / 2^31) per lane (see s8_vadd_avx2.c for why the
 * negative products agree). */
VNNI_INLINE __m512i srdhm16(__m512i x, int32_t m) {
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
VNNI_INLINE __m512i rdbypot16(__m512i x, int32_t e) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i mask = _mm512_set1_epi32((int32_t)((INT64_C(1) << e) - 1));
  const __m512i rem = _mm512_and_si512(x, mask);
  __m512i thresh = _mm512_srai_epi32(mask, 1);
  thresh = _mm512_mask_add_epi32(thresh, _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512()), thresh, one);
  const __m512i shifted = _mm512_sra_epi32(x, _mm_cvtsi32_si128(e));
  return _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(rem, thresh), shifted, one);
}

/* srdhm16(a << sh, m) for |a| <= 256, 15 <= sh <= 23 (a << sh cannot wrap)
 * and m >= 0, in 32-bit lanes. With S = 31 - sh (8..16) it is
 * floor((a*m + 2^(S-1)) / 2^S), and splitting m = mh * 2^16 + ml keeps both
 * partial products in int32 (|a * mh * 2^(16-S)| < 2^31, |a*ml| < 2^25):
 *   a * (mh << (16 - S)) + ((a*ml + 2^(S-1)) >> S)
 * exactly, as a*mh*2^16 is a multiple of 2^S. Two vpmulld instead of the
 * even/odd 64-bit products. */
typedef struct {
  __m512i mh, ml, round;
  int s;
} small_scale;

VNNI_INLINE small_scale small_scale_of(int32_t m, int32_t sh) {
  small_scale c;
  c.s = 31 - sh;
  c.mh = _mm512_set1_epi32((int32_t)(((uint32_t)m >> 16) << (16 - c.s)));
  c.ml = _mm512_set1_epi32(m & 0xFFFF);
  c.round = _mm512_set1_epi32(1 << (c.s - 1));
  return c;
}

VNNI_INLINE __m512i scale_small(__m512i a, const small_scale* c) {
  return _mm512_add_epi32(_mm512_mullo_epi32(a, c->mh),
                          _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(a, c->ml), c->round), (unsigned)c->s));
}

VNNI_INLINE int small_ok(int32_t sh, int32_t m, int32_t offset) {
  return sh >= 15 && sh <= 23 && m >= 0 && offset >= -128 && offset <= 128;
}

/* The output stage, SRDHM by the output multiplier then the rounding shift
 * (ties away from zero) plus the output offset, is the GEMM tiles'
 * requantization with one multiplier and shift in every lane: its fast path
 * (rq16_scale_fast) where that covers the parameters, else the separate
 * steps (srdhm16, rdbypot16). */
typedef struct {
  __m512i off0, off1, out_off;
  small_scale s0, s1;
  rq16_fast out;
  int small, fast;
} vadd_consts;

/* 16 sums before narrowing: LiteRT's int32 result plus the output offset,
 * whose low 16 bits are what its int16 truncation and wrapping offset add
 * give (both are modular). */
VNNI_INLINE __m512i add16(const edged_op* op, const vadd_consts* k, const int8_t* x0, const int8_t* x1,
                          const int small, const int fast) {
  const __m512i a = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)x0)), k->off0);
  const __m512i c = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)x1)), k->off1);
  __m512i sa, sc;
  if (small) {
    sa = scale_small(a, &k->s0);
    sc = scale_small(c, &k->s1);
  } else {
    sa = srdhm16(shift_any16(a, op->left_shift + op->in_shift[0]), op->in_multiplier[0]);
    sc = srdhm16(shift_any16(c, op->left_shift + op->in_shift[1]), op->in_multiplier[1]);
  }
  const __m512i sum = _mm512_add_epi32(sa, sc);
  if (fast) return rq16_scale_fast(&k->out, sum, 1);
  return _mm512_add_epi32(rdbypot16(srdhm16(sum, op->multiplier), -op->shift), k->out_off);
}

/* vmovn_s32 (truncation to int16) then vqmovn_s16 (saturation to int8) of
 * 64 sums: one word permute per pair, one pack, one qword permute. */
VNNI_INLINE __m512i narrow64(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i words = _mm512_setr_epi32(0x00020000, 0x00060004, 0x000A0008, 0x000E000C, 0x00120010, 0x00160014,
                                          0x001A0018, 0x001E001C, 0x00220020, 0x00260024, 0x002A0028, 0x002E002C,
                                          0x00320030, 0x00360034, 0x003A0038, 0x003E003C);
  const __m512i w01 = _mm512_permutex2var_epi16(v0, words, v1);
  const __m512i w23 = _mm512_permutex2var_epi16(v2, words, v3);
  /* vpacksswb works per 128-bit lane: qwords 0,2,4,6 hold w01, 1,3,5,7 w23. */
  return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packs_epi16(w01, w23));
}

VNNI_INLINE size_t vadd_body(const edged_op* op, const vadd_consts* k, const int8_t* x0, const int8_t* x1,
                             int8_t* y, size_t body, const int small, const int fast) {
  const int8_t lo = (int8_t)(op->act_min > -128 ? op->act_min : -128);
  const int8_t hi = (int8_t)(op->act_max < 127 ? op->act_max : 127);
  const __m512i lo64 = _mm512_set1_epi8(lo), hi64 = _mm512_set1_epi8(hi);
  size_t i = 0;
  for (; i + 64 <= body; i += 64) {
    const __m512i v0 = add16(op, k, x0 + i, x1 + i, small, fast);
    const __m512i v1 = add16(op, k, x0 + i + 16, x1 + i + 16, small, fast);
    const __m512i v2 = add16(op, k, x0 + i + 32, x1 + i + 32, small, fast);
    const __m512i v3 = add16(op, k, x0 + i + 48, x1 + i + 48, small, fast);
    _mm512_storeu_si512(y + i, _mm512_min_epi8(_mm512_max_epi8(narrow64(v0, v1, v2, v3), lo64), hi64));
  }
  for (; i + 16 <= body; i += 16) {
    const __m128i v8 = _mm256_cvtsepi16_epi8(_mm512_cvtepi32_epi16(add16(op, k, x0 + i, x1 + i, small, fast)));
    _mm_storeu_si128((__m128i*)(y + i), _mm_min_epi8(_mm_max_epi8(v8, _mm512_castsi512_si128(lo64)),
                                                     _mm512_castsi512_si128(hi64)));
  }
  return i;
}

VNNI_TARGET size_t edged_s8_vadd_avx512(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y,
                                        size_t body) {
  vadd_consts k;
  const int32_t sh0 = op->left_shift + op->in_shift[0], sh1 = op->left_shift + op->in_shift[1];
  k.off0 = _mm512_set1_epi32(op->in_offset[0]);
  k.off1 = _mm512_set1_epi32(op->in_offset[1]);
  k.small = small_ok(sh0, op->in_multiplier[0], op->in_offset[0]) && small_ok(sh1, op->in_multiplier[1], op->in_offset[1]);
  if (k.small) {
    k.s0 = small_scale_of(op->in_multiplier[0], sh0);
    k.s1 = small_scale_of(op->in_multiplier[1], sh1);
  }
  k.out_off = _mm512_set1_epi32(op->output_offset);
  k.fast = rq16_fast_uniform(&k.out, op->multiplier, op->shift, op->output_offset);
  /* Each combination of the two shortcuts gets its own loop. */
  if (k.fast) return k.small ? vadd_body(op, &k, x0, x1, y, body, 1, 1) : vadd_body(op, &k, x0, x1, y, body, 0, 1);
  return k.small ? vadd_body(op, &k, x0, x1, y, body, 1, 0) : vadd_body(op, &k, x0, x1, y, body, 0, 0);
}

#else
typedef int edged_s8_vadd_avx512_unused;
#endif
