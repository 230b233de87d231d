/* SOFTMAX int8 -> int8 over the last axis, LiteRT's x86 path: a float table
 * of exp(-input_scale * beta * d) for every int8 distance d = max - x, a
 * sequential float sum, and std::round of each probability / output scale.
 * Every float step is written in the same order as LiteRT's C++ so the
 * result is bit-identical (the build disables FMA contraction).
 * LiteRT's aarch64 build (mode EDGED_BODY_NEON) runs SoftmaxInt8LUT instead:
 * the same distances index a table of exp scaled to uint16, summed in
 * integers, and each entry is scaled by a fixed-point multiplier derived per
 * row from 1 / (sum * output scale). */
#include <math.h>

#include "internal.h"

void edged_softmax_table(float input_scale, float beta, float* table) {
  const float scale = -input_scale * beta;
  for (int32_t v = 0; v <= 255; ++v) table[255 - v] = expf(scale * (float)v);
}

void edged_softmax_uint16_table(float input_scale, float beta, int32_t* table) {
  const float scale = input_scale * beta;
  for (int32_t v = 0; v <= 255; ++v) {
    /* float * int is a float product; + 0.5 is a double sum; the cast truncates. */
    const int32_t entry = (int32_t)(expf(scale * (float)(v - 255)) * 65535.0f + 0.5);
    table[v] = entry < 65535 ? entry : 65535;
  }
}

/* TFLite's QuantizeMultiplier; a non-finite value (a degenerate output
 * scale) takes the cap it gives values past 2^30. */
static void quantize_multiplier(double real, int32_t* multiplier, int32_t* shift) {
  if (real == 0.0) {
    *multiplier = 0, *shift = 0;
    return;
  }
  if (!isfinite(real)) {
    *multiplier = INT32_MAX, *shift = 30;
    return;
  }
  int exponent;
  const double mantissa = frexp(real, &exponent);
  int64_t q = (int64_t)round(mantissa * 2147483648.0);
  if (q == (INT64_C(1) << 31)) {
    q /= 2;
    ++exponent;
  }
  if (exponent < -31) exponent = 0, q = 0;
  if (exponent > 30) exponent = 30, q = INT32_MAX;
  *multiplier = (int32_t)q, *shift = exponent;
}

static int32_t row_max(const int8_t* x, size_t depth) {
  int32_t m = -128;
  for (size_t j = 0; j < depth; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

static void softmax_uint16(const edged_op* op, int32_t batch) {
  const size_t depth = (size_t)op->in_c;
  const size_t rows = (size_t)op->count / depth;
  const size_t body = depth - depth % 16;
  const int32_t* table = (const int32_t*)op->table;
  const int32_t zp = op->output_offset;

  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t r = 0; r < rows; ++r, x += depth, y += depth) {
      const int32_t max_val = row_max(x, depth);
      const int32_t* t = table + 255 - max_val;
      /* LiteRT's int32 sum; unsigned so that a table not from
       * edged_softmax_uint16_table() wraps instead of overflowing. */
      uint32_t sum = 0;
      for (size_t j = 0; j < depth; ++j) sum += (uint32_t)t[x[j]];
      const float inv = 1.0f / ((float)(int32_t)sum * op->scale);
      int32_t multiplier, shift;
      quantize_multiplier((double)inv, &multiplier, &shift);
      for (size_t j = 0; j < depth; ++j) {
        const int32_t v = j < body ? edged_mbqm_rhu(t[x[j]], multiplier, shift)
                                   : edged_mbqm(t[x[j]], multiplier, shift);
        y[j] = (int8_t)edged_clamp(edged_wadd(v, zp), -128, 127);
      }
    }
  }
}

void edged_softmax(const edged_op* op, int32_t batch) {
  if (op->mode == EDGED_BODY_NEON) {
    softmax_uint16(op, batch);
    return;
  }
  const size_t depth = (size_t)op->in_c;
  const size_t rows = (size_t)op->count / depth;
  const float* table = (const float*)op->table;
  const float out_scale = op->scale;
  const int32_t zp = op->output_offset;

  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t r = 0; r < rows; ++r, x += depth, y += depth) {
      const int32_t max_val = row_max(x, depth);
      /* table[255 - max + x] == exp(-input_scale * beta * (max - x)); x <= max
       * keeps the index in [0, 255]. */
      const float* t = table + 255 - max_val;
      float sum = 0.0f;
      for (size_t j = 0; j < depth; ++j) sum += t[x[j]];
      const float inv = 1.0f / (sum * out_scale);
      for (size_t j = 0; j < depth; ++j) {
        float p = roundf(t[x[j]] * inv);
        /* Out-of-range (or NaN, from a degenerate scale) would be UB to
         * convert; anything past +-2^20 clamps the same way. */
        if (!(p < 1048576.0f)) p = 1048576.0f;
        if (p < -1048576.0f) p = -1048576.0f;
        y[j] = (int8_t)edged_clamp((int32_t)p + zp, -128, 127);
      }
    }
  }
}
