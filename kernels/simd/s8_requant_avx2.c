/* Requantization of a row of int32 sums by one multiplier and shift, for
 * x86-64 with AVX2: (acc + centre) scaled with ties up (LiteRT's vector
 * rounding) or away from zero (gemmlowp), + output offset, saturated to
 * int8. MEAN's two forms: the optimized one's body (its per-channel tail goes
 * through scalar gemmlowp code) and the reference one throughout. The rq8
 * machinery of the GEMM and depthwise kernels, every lane given the same
 * parameters.
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx2_requant.h"

/* Requantization parameters giving all 8 lanes one multiplier and shift
 * (into mult8 and shift8, which the result points at), clamped to int8;
 * their rq8 constants into p. */
AVX2_INLINE edged_requant uniform_rq8(int32_t multiplier, int32_t shift, int32_t output_offset, int ties_away,
                                      int32_t mult8[8], int32_t shift8[8], rq8* p) {
  for (int i = 0; i < 8; ++i) {
    mult8[i] = multiplier;
    shift8[i] = shift;
  }
  const edged_requant rq = {mult8, shift8, output_offset, -128, 127, ties_away ? 1 : 0, 0};
  rq8_load(p, &rq, 0, 8);
  return rq;
}

AVX2_TARGET size_t edged_s8_requant_uniform_avx2(const int32_t* acc, size_t n, int32_t centre,
                                                 int32_t multiplier, int32_t shift, int32_t output_offset,
                                                 int ties_away, int8_t* y) {
  if (n < 8) return 0;
  int32_t mult8[8], shift8[8];
  rq8 p;
  const edged_requant rq = uniform_rq8(multiplier, shift, output_offset, ties_away, mult8, shift8, &p);
  const __m256i c = _mm256_set1_epi32(centre);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i sum = _mm256_add_epi32(_mm256_loadu_si256((const __m256i*)(acc + i)), c);
    store8(&p, rq8_apply(&p, sum, &rq), y + i);
  }
  return i;
}

/* REQUANTIZE's body: y[i] = requant(x[i] + input_offset) with ties up, 8 at
 * a time; returns how many it wrote (a multiple of 8, at most n). */
AVX2_TARGET size_t edged_s8_requant_bytes_avx2(const int8_t* x, size_t n, int32_t input_offset,
                                               int32_t multiplier, int32_t shift, int32_t output_offset,
                                               int8_t* y) {
  if (n < 8) return 0;
  int32_t mult8[8], shift8[8];
  rq8 p;
  const edged_requant rq = uniform_rq8(multiplier, shift, output_offset, 0, mult8, shift8, &p);
  const __m256i c = _mm256_set1_epi32(input_offset);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_add_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(x + i))), c);
    store8(&p, rq8_apply(&p, v, &rq), y + i);
  }
  return i;
}

#else
typedef int edged_s8_requant_avx2_unused;
#endif
