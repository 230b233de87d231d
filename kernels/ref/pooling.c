/* MAX_POOL_2D and AVERAGE_POOL_2D (int8, NHWC), as TFLite's reference and
 * optimized integer kernels: windows clipped to the input, no zero-point
 * handling (input and output share quantization), then the activation clamp.
 * run.c guarantees every window has at least one valid tap. */
#include "internal.h"

#define POOL_CHUNK 256

void edged_max_pool_2d(const edged_op* op, int32_t batch) {
#if defined(__x86_64__)
  if (edged_cpu_variants() & (1u << EDGED_VARIANT_AVX2)) {
    edged_s8_maxpool_avx2(op, batch);
    return;
  }
#endif
  const size_t c = (size_t)op->in_c;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        const edged_window w = edged_pool_window(op, oy, ox);
        int8_t* yp = y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * c;
        for (size_t c0 = 0; c0 < c; c0 += POOL_CHUNK) {
          const size_t cn = c - c0 < POOL_CHUNK ? c - c0 : POOL_CHUNK;
          int8_t m[POOL_CHUNK];
          memset(m, 0x80, cn); /* -128: lowest int8 */
          for (int32_t iy = w.y0; iy < w.y1; ++iy)
            for (int32_t ix = w.x0; ix < w.x1; ++ix) {
              const int8_t* xp = x + ((size_t)iy * (size_t)op->in_w + (size_t)ix) * c + c0;
              for (size_t j = 0; j < cn; ++j) m[j] = xp[j] > m[j] ? xp[j] : m[j];
            }
          for (size_t j = 0; j < cn; ++j) yp[c0 + j] = (int8_t)edged_clamp(m[j], op->act_min, op->act_max);
        }
      }
    }
  }
}

void edged_average_pool_2d(const edged_op* op, int32_t batch) {
#if defined(__x86_64__)
  /* Its int32 lanes need sums below 2^23: at most 2^16 taps of |x| <= 128. */
  if ((edged_cpu_variants() & (1u << EDGED_VARIANT_AVX2)) && (int64_t)op->filter_h * op->filter_w <= 65536) {
    edged_s8_avgpool_avx2(op, batch);
    return;
  }
#endif
  const size_t c = (size_t)op->in_c;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        const edged_window w = edged_pool_window(op, oy, ox);
        const int32_t count = (w.y1 - w.y0) * (w.x1 - w.x0);
        const int32_t half = count / 2;
        const double inv = 1.0 / count;
        int8_t* yp = y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * c;
        for (size_t c0 = 0; c0 < c; c0 += POOL_CHUNK) {
          const size_t cn = c - c0 < POOL_CHUNK ? c - c0 : POOL_CHUNK;
          int32_t acc[POOL_CHUNK];
          memset(acc, 0, cn * sizeof(int32_t));
          for (int32_t iy = w.y0; iy < w.y1; ++iy)
            for (int32_t ix = w.x0; ix < w.x1; ++ix) {
              const int8_t* xp = x + ((size_t)iy * (size_t)op->in_w + (size_t)ix) * c + c0;
              for (size_t j = 0; j < cn; ++j) acc[j] += xp[j];
            }
          for (size_t j = 0; j < cn; ++j) {
            const int32_t avg = edged_rounded_average(acc[j], half, inv);
            yp[c0 + j] = (int8_t)edged_clamp(avg, op->act_min, op->act_max);
          }
        }
      }
    }
  }
}
