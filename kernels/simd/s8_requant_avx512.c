/* Requantization of a row of int32 sums by one multiplier and shift, for
 * x86-64 with AVX-512: MEAN's (acc + centre) scaled with ties up or away
 * from zero, + output offset, saturated to int8; what s8_requant_avx2.c
 * does, 16 lanes at a time with the rq16 constants of the GEMM tiles (every
 * lane given the same parameters).
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

VNNI_TARGET size_t edged_s8_requant_uniform_avx512(const int32_t* acc, size_t n, int32_t centre,
                                                   int32_t multiplier, int32_t shift, int32_t output_offset,
                                                   int ties_away, int8_t* y) {
  if (n < 16) return 0;
  int32_t mult16[16], shift16[16];
  for (int i = 0; i < 16; ++i) {
    mult16[i] = multiplier;
    shift16[i] = shift;
  }
  const edged_requant rq = {mult16, shift16, output_offset, -128, 127, ties_away ? 1 : 0, 0};
  rq16 p;
  rq16_load(&p, &rq, 0, 16);
  /* Each 16 sums are one "row" of a one-block tile. */
  const size_t rows = n / 16;
  rq16_store_rows(&p, &rq, (const __m512i*)acc, 1, rows, _mm512_set1_epi32(centre), y, 16);
  return rows * 16;
}

#else
typedef int edged_s8_requant_avx512_unused;
#endif
