/* MAX_POOL_2D (int8, NHWC) for x86-64 with AVX2: the reference kernel's
 * arithmetic (kernels/ref/pooling.c: windows clipped to the input, the
 * maximum, then the activation clamp) with channels as the SIMD axis, 32,
 * 16 and 8 at a time and the last c % 8 one by one. Every load reads only
 * the channels of one input pixel, so nothing past a row is touched.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2")))

AVX2_TARGET void edged_s8_maxpool_avx2(const edged_op* op, int32_t batch) {
  const size_t c = (size_t)op->in_c, in_w = (size_t)op->in_w;
  const int32_t lo = op->act_min > -128 ? op->act_min : -128, hi = op->act_max < 127 ? op->act_max : 127;
  const __m256i lo32 = _mm256_set1_epi8((char)lo), hi32 = _mm256_set1_epi8((char)hi);
  const __m128i lo16 = _mm256_castsi256_si128(lo32), hi16 = _mm256_castsi256_si128(hi32);
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        const edged_window win = edged_pool_window(op, oy, ox);
        const int32_t y0 = win.y0, y1 = win.y1, x0 = win.x0, x1 = win.x1;
        const int8_t* first = x + ((size_t)y0 * in_w + (size_t)x0) * c;
        int8_t* yp = y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * c;
        size_t j = 0;
        for (; j + 32 <= c; j += 32) {
          __m256i m = _mm256_loadu_si256((const __m256i*)(first + j));
          for (int32_t r = y0; r < y1; ++r)
            for (int32_t s = x0; s < x1; ++s)
              m = _mm256_max_epi8(m, _mm256_loadu_si256((const __m256i*)(x + ((size_t)r * in_w + (size_t)s) * c + j)));
          _mm256_storeu_si256((__m256i*)(yp + j), _mm256_min_epi8(_mm256_max_epi8(m, lo32), hi32));
        }
        for (; j + 16 <= c; j += 16) {
          __m128i m = _mm_loadu_si128((const __m128i*)(first + j));
          for (int32_t r = y0; r < y1; ++r)
            for (int32_t s = x0; s < x1; ++s)
              m = _mm_max_epi8(m, _mm_loadu_si128((const __m128i*)(x + ((size_t)r * in_w + (size_t)s) * c + j)));
          _mm_storeu_si128((__m128i*)(yp + j), _mm_min_epi8(_mm_max_epi8(m, lo16), hi16));
        }
        for (; j + 8 <= c; j += 8) {
          __m128i m = _mm_loadl_epi64((const __m128i*)(first + j));
          for (int32_t r = y0; r < y1; ++r)
            for (int32_t s = x0; s < x1; ++s)
              m = _mm_max_epi8(m, _mm_loadl_epi64((const __m128i*)(x + ((size_t)r * in_w + (size_t)s) * c + j)));
          _mm_storel_epi64((__m128i*)(yp + j), _mm_min_epi8(_mm_max_epi8(m, lo16), hi16));
        }
        for (; j < c; ++j) {
          int32_t m = first[j];
          for (int32_t r = y0; r < y1; ++r)
            for (int32_t s = x0; s < x1; ++s) {
              const int32_t v = x[((size_t)r * in_w + (size_t)s) * c + j];
              m = v > m ? v : m;
            }
          yp[j] = (int8_t)edged_clamp(m, lo, hi);
        }
      }
    }
  }
}

#else
typedef int edged_s8_maxpool_avx2_unused;
#endif
