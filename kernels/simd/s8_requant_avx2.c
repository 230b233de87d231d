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

AVX2_TARGET size_t edged_s8_requant_uniform_avx2(const int32_t* acc, size_t n, int32_t centre,
                                                 int32_t multiplier, int32_t shift, int32_t output_offset,
                                                 int ties_away, int8_t* y) {
  if (n < 8) return 0;
  const int32_t mult8[8] = {multiplier, multiplier, multiplier, multiplier,
                            multiplier, multiplier, multiplier, multiplier};
  const int32_t shift8[8] = {shift, shift, shift, shift, shift, shift, shift, shift};
  const edged_requant rq = {mult8, shift8, output_offset, -128, 127, ties_away ? 1 : 0, 0};
  const __m256i c = _mm256_set1_epi32(centre);
  rq8 p;
  rq8_load(&p, &rq, 0, 8);
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
  const int32_t mult8[8] = {multiplier, multiplier, multiplier, multiplier,
                            multiplier, multiplier, multiplier, multiplier};
  const int32_t shift8[8] = {shift, shift, shift, shift, shift, shift, shift, shift};
  const edged_requant rq = {mult8, shift8, output_offset, -128, 127, 0, 0};
  const __m256i c = _mm256_set1_epi32(input_offset);
  rq8 p;
  rq8_load(&p, &rq, 0, 8);
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
