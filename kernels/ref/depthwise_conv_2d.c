/* DEPTHWISE_CONV_2D, int8 per-channel (NHWC, filter [1, kh, kw, out_c]).
 *
 * Portable version, also used for the channels the SIMD kernel leaves over.
 * Channels are the inner loop so the compiler can vectorize across them:
 * (x + input_offset) is in [-255, 255] and the weight in [-128, 127], so each
 * product fits in int16 (|p| <= 32640), which lets it use 16-bit multiplies
 * before widening into the int32 accumulators.
 *
 * Requantization mimics LiteRT's DepthwiseConvGeneral + optimized Quantize on
 * x86: channel blocks of 8 round ties up, the out_c % 8 leftovers use the
 * scalar gemmlowp rounding.
 */
#include "internal.h"

#define DW_CHUNK 256

void edged_dw_pixel(const edged_op* op, const int8_t* x, int8_t* yp, int32_t oy, int32_t ox,
                    size_t c_begin, size_t c_end) {
  const size_t in_c = (size_t)op->in_c, out_c = (size_t)op->out_c;
  const size_t dm = (size_t)op->depth_multiplier;
  const size_t body = out_c - out_c % 8;
  const int16_t io = (int16_t)op->input_offset;
  const int8_t* w = (const int8_t*)op->weights;
  const int32_t iy0 = oy * op->stride_h - op->pad_top, ix0 = ox * op->stride_w - op->pad_left;

  for (size_t c0 = c_begin; c0 < c_end; c0 += DW_CHUNK) {
    const size_t cn = c_end - c0 < DW_CHUNK ? c_end - c0 : DW_CHUNK;
    /* uint32: wraps like TFLite's int32 accumulator, without UB. */
    uint32_t acc[DW_CHUNK];
    for (size_t j = 0; j < cn; ++j) acc[j] = op->bias ? (uint32_t)op->bias[c0 + j] : 0u;
    for (int32_t ky = 0; ky < op->filter_h; ++ky) {
      const int32_t iy = iy0 + ky * op->dilation_h;
      if (iy < 0 || iy >= op->in_h) continue; /* padding taps contribute nothing */
      for (int32_t kx = 0; kx < op->filter_w; ++kx) {
        const int32_t ix = ix0 + kx * op->dilation_w;
        if (ix < 0 || ix >= op->in_w) continue;
        const int8_t* xp = x + ((size_t)iy * (size_t)op->in_w + (size_t)ix) * in_c;
        const int8_t* wp = w + ((size_t)ky * (size_t)op->filter_w + (size_t)kx) * out_c + c0;
        if (dm == 1) {
          const int8_t* xc = xp + c0;
          for (size_t j = 0; j < cn; ++j)
            acc[j] += (uint32_t)(int32_t)(int16_t)((int16_t)(xc[j] + io) * (int16_t)wp[j]);
        } else { /* output channel oc reads input channel oc / depth_multiplier */
          for (size_t j = 0; j < cn; ++j)
            acc[j] += (uint32_t)(int32_t)(int16_t)((int16_t)(xp[(c0 + j) / dm] + io) * (int16_t)wp[j]);
        }
      }
    }
    for (size_t j = 0; j < cn; ++j) {
      const size_t c = c0 + j;
      yp[c] = edged_requant1((int32_t)acc[j], op->out_multiplier[c], op->out_shift[c],
                             op->output_offset, op->act_min, op->act_max, c >= body);
    }
  }
}

void edged_depthwise_conv_2d(const edged_op* op, int32_t batch) {
#if defined(__x86_64__)
  /* The few pixels at the end of mobile networks (2x2, 1x1) read their
   * in-bounds taps directly; larger layers build the pair image in scratch.
   * A descriptor without scratch (a caller that never sized it) still runs,
   * on the AVX2 kernel. */
  const int avx512 = (edged_cpu_variants() & (1u << EDGED_VARIANT_AVX512VNNI)) != 0;
  if (avx512 && edged_s8_dwconv_taps_avx512_fits(op)) {
    edged_s8_dwconv_taps_avx512(op, batch);
    return;
  }
  if (avx512 && op->scratch != NULL && edged_s8_dwconv_avx512_scratch(op) != 0) {
    edged_s8_dwconv_avx512(op, batch);
    return;
  }
  if ((edged_cpu_variants() & (1u << EDGED_VARIANT_AVX2)) && edged_s8_dwconv_avx2(op, batch) == 0)
    return;
#endif
  const size_t out_c = (size_t)op->out_c;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy)
      for (int32_t ox = 0; ox < op->out_w; ++ox)
        edged_dw_pixel(op, x, y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * out_c, oy, ox, 0, out_c);
  }
}

size_t edged_depthwise_conv_2d_scratch_size(const edged_op* op) {
#if defined(__x86_64__)
  return edged_s8_dwconv_avx512_scratch(op);
#else
  (void)op;
  return 0;
#endif
}
