/* QUANTIZE (float32 -> int8), REQUANTIZE (int8 -> int8), DEQUANTIZE
 * (int8 -> float32) as LiteRT's optimized kernels compute them on x86-64:
 * a NEON(-on-SSE) body over the flat tensor, batch included, and a scalar
 * tail with different rounding. The flat index decides which one an element
 * gets, exactly as in LiteRT. Its aarch64 build differs in DEQUANTIZE's body
 * only (mode EDGED_BODY_NEON). */
#include <math.h>

#include "internal.h"

/* Round to nearest, ties to even (vcvtnq / _mm_cvtps_epi32) for |y| < 2^22:
 * adding 1.5 * 2^23 lands in a binade whose ulp is 1. Without -ffast-math the
 * compiler keeps both operations. */
static inline float rne_small(float y) {
  const float magic = 12582912.0f;
  return (y + magic) - magic;
}

/* A finite result past +-1000 saturates the int8 clamp whatever the zero
 * point, so clamping first changes nothing and keeps conversions defined.
 * NaN follows the numpy reference (int64 minimum, so -128). */
static inline int8_t finish_f(float r, int32_t zp) {
  if (r != r) return -128;
  if (r > 1000.0f) r = 1000.0f;
  if (r < -1000.0f) r = -1000.0f;
  return (int8_t)edged_clamp((int32_t)r + zp, -128, 127);
}

void edged_quantize(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  const size_t n = count * (size_t)batch, body = n - n % 8;
  const double scale = (double)op->scale;
  const float recip = (float)(1.0 / scale);
  const int32_t zp = op->zero_point;
  for (int32_t b = 0; b < batch; ++b) {
    const float* x = (const float*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    const size_t flat0 = (size_t)b * count;
    for (size_t i = 0; i < count; ++i) {
      if (flat0 + i < body) {
        float v = x[i] * recip;
        if (v > 1000.0f) v = 1000.0f; /* also keeps rne_small exact */
        if (v < -1000.0f) v = -1000.0f;
        y[i] = finish_f(rne_small(v), zp);
      } else {
        double v = (double)x[i] / scale;
        if (v > 1000.0) v = 1000.0;
        if (v < -1000.0) v = -1000.0;
        y[i] = finish_f((float)round(v), zp);
      }
    }
  }
}

void edged_requantize(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  const size_t n = count * (size_t)batch, body = n - n % 16;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    const size_t flat0 = (size_t)b * count;
    size_t i = 0;
#if defined(__x86_64__)
    /* The part of this sample inside the body, 8 at a time. */
    const size_t in_body = body > flat0 ? (body - flat0 < count ? body - flat0 : count) : 0;
    if (edged_cpu_variants() & (1u << EDGED_VARIANT_AVX2))
      i = edged_s8_requant_bytes_avx2(x, in_body, op->input_offset, op->multiplier, op->shift,
                                      op->output_offset, y);
#endif
    for (; i < count; ++i) {
      const int32_t centred = x[i] + op->input_offset;
      const int32_t v = flat0 + i < body ? edged_mbqm_rhu(centred, op->multiplier, op->shift)
                                         : edged_mbqm(centred, op->multiplier, op->shift);
      y[i] = (int8_t)edged_clamp(edged_wadd(v, op->output_offset), -128, 127);
    }
  }
}

void edged_dequantize(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  const size_t n = count * (size_t)batch, body = n - n % 8;
  const float scale = op->scale;
  const int32_t zp = op->zero_point;
  /* Body: float(x) * s + float(-zp * s). x86: two roundings (LiteRT's build
   * has no FMA there; -ffp-contract=off keeps us from fusing either). aarch64
   * (EDGED_BODY_NEON): one, vfmaq_f32's. In double the product (8 by 24
   * bits) and the sum (within 2^9 of each other) are exact, so converting
   * to float is that single rounding on any target. */
  const float bias = (float)(-(double)zp * (double)scale);
  const int fused = op->mode == EDGED_BODY_NEON;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    float* y = (float*)op->out + (size_t)b * (size_t)op->out_stride;
    const size_t flat0 = (size_t)b * count;
    for (size_t i = 0; i < count; ++i) {
      if (flat0 + i < body && fused) {
        y[i] = (float)((double)x[i] * (double)scale + (double)bias);
      } else if (flat0 + i < body) {
        const float prod = (float)x[i] * scale;
        y[i] = prod + bias;
      } else {
        y[i] = (float)((double)scale * (double)(x[i] - zp));
      }
    }
  }
}
