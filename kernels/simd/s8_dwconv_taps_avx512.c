/* DEPTHWISE_CONV_2D for x86-64 with AVX-512, depth multiplier 1, for the few
 * output pixels at the end of mobile networks (2x2, 1x1).
 *
 * There most taps of a window fall in the padding, which contributes
 * nothing, and the pair image of s8_dwconv_avx512.c would cost more to
 * build than the pixels. This kernel reads only each window's taps inside
 * the input, straight from it: per tap and 16 channels, (x + input_offset)
 * times the weight in int32 lanes, the reference's arithmetic exactly.
 * Channels go 16 per block, blocks outer, so a block's requantization
 * constants are made once; rounding as in s8_dwconv_avx512.c (ties up below
 * out_c - out_c % 8, away from zero above).
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

#define MAX_PIXELS 4
#define MAX_TAPS 64

typedef struct {
  size_t n;               /* taps inside the input */
  size_t x_off[MAX_TAPS]; /* input pixel * in_c */
  size_t w_off[MAX_TAPS]; /* filter tap * out_c */
} window_taps;

int edged_s8_dwconv_taps_avx512_fits(const edged_op* op) {
  return op->depth_multiplier == 1 && (int64_t)op->out_h * op->out_w <= MAX_PIXELS &&
         (int64_t)op->filter_h * op->filter_w <= MAX_TAPS;
}

static void taps_of(const edged_op* op, int32_t oy, int32_t ox, window_taps* t) {
  size_t tap[MAX_TAPS];
  t->n = edged_dw_taps_inside(op, oy * op->stride_h - op->pad_top, ox * op->stride_w - op->pad_left, t->x_off, tap);
  for (size_t i = 0; i < t->n; ++i) t->w_off[i] = tap[i] * (size_t)op->out_c;
}

VNNI_TARGET void edged_s8_dwconv_taps_avx512(const edged_op* op, int32_t batch) {
  const size_t c_all = (size_t)op->out_c, body = c_all - c_all % 8;
  const size_t pixels = (size_t)op->out_h * (size_t)op->out_w;
  const int8_t* w = (const int8_t*)op->weights;
  const edged_requant rq_up = edged_requant_of(op, 0, 0), rq_away = edged_requant_of(op, 1, 0);
  const __m512i off = _mm512_set1_epi32(op->input_offset);
  window_taps taps[MAX_PIXELS];
  for (size_t r = 0; r < pixels; ++r)
    taps_of(op, (int32_t)(r / (size_t)op->out_w), (int32_t)(r % (size_t)op->out_w), &taps[r]);
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t c = 0; c < c_all; c += 16) {
      const size_t n = c_all - c < 16 ? c_all - c : 16;
      const __mmask16 lanes = (__mmask16)((1u << n) - 1u);
      const __m512i bias = op->bias ? _mm512_maskz_loadu_epi32(lanes, op->bias + c) : _mm512_setzero_si512();
      rq16_split q;
      rq16_split_load(&q, &rq_up, &rq_away, c, c_all, body);
      for (size_t r = 0; r < pixels; ++r) {
        __m512i acc = bias;
        for (size_t t = 0; t < taps[r].n; ++t) {
          const __m512i xv = _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, x + taps[r].x_off[t] + c)), off);
          const __m512i wv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, w + taps[r].w_off[t] + c));
          acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, wv));
        }
        rq16_put(&q.lo, rq16_split_apply(&q, acc), y + r * c_all + c);
      }
    }
  }
}

#else
typedef int edged_s8_dwconv_taps_avx512_unused;
#endif
