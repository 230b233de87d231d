/* AVERAGE_POOL_2D (int8, NHWC) for x86-64 with AVX2: the reference kernel's
 * arithmetic (kernels/ref/pooling.c: windows clipped to the input, the sum,
 * TFLite's division rounding half away from zero, the activation clamp)
 * with 8 channels per step in int32 lanes and the last c % 8 one by one.
 * The division is the reciprocal form of edged_rounded_average (internal.h)
 * on four doubles at a time. Windows of more than 2^16 taps, whose sums
 * could pass 2^23, are left to the reference kernel by the caller.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2")))

/* (|a| + count/2) / count truncated, as doubles: see edged_rounded_average. */
AVX2_INLINE __m128i quotient4(__m128i n, __m256d inv, __m256d lift) {
  return _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(n), inv), lift));
}

AVX2_TARGET void edged_s8_avgpool_avx2(const edged_op* op, int32_t batch) {
  const size_t c = (size_t)op->in_c, in_w = (size_t)op->in_w;
  const __m256i lo = _mm256_set1_epi32(op->act_min), hi = _mm256_set1_epi32(op->act_max);
  const __m256d lift = _mm256_set1_pd(0x1p-30);
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        const edged_window win = edged_pool_window(op, oy, ox);
        const int32_t y0 = win.y0, y1 = win.y1, x0 = win.x0, x1 = win.x1;
        const int32_t count = (y1 - y0) * (x1 - x0), half = count / 2;
        const double inv_s = 1.0 / count;
        const __m256d inv = _mm256_set1_pd(inv_s);
        const __m256i half8 = _mm256_set1_epi32(half);
        int8_t* yp = y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * c;
        size_t j = 0;
        for (; j + 8 <= c; j += 8) {
          __m256i acc = _mm256_setzero_si256();
          for (int32_t r = y0; r < y1; ++r) {
            const int8_t* row = x + (size_t)r * in_w * c + j;
            for (int32_t s = x0; s < x1; ++s)
              acc = _mm256_add_epi32(acc, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(row + (size_t)s * c))));
          }
          const __m256i n = _mm256_add_epi32(_mm256_abs_epi32(acc), half8);
          const __m256i q = _mm256_setr_m128i(quotient4(_mm256_castsi256_si128(n), inv, lift),
                                              quotient4(_mm256_extracti128_si256(n, 1), inv, lift));
          /* The sign of the sum back (a zero sum gives a zero quotient either way). */
          __m256i v = _mm256_sign_epi32(q, acc);
          v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
          const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
          _mm_storel_epi64((__m128i*)(yp + j), _mm_packs_epi16(w16, w16));
        }
        for (; j < c; ++j) {
          int32_t a = 0;
          for (int32_t r = y0; r < y1; ++r)
            for (int32_t s = x0; s < x1; ++s) a += x[((size_t)r * in_w + (size_t)s) * c + j];
          yp[j] = (int8_t)edged_clamp(edged_rounded_average(a, half, inv_s), op->act_min, op->act_max);
        }
      }
    }
  }
}

#else
typedef int edged_s8_avgpool_avx2_unused;
#endif
