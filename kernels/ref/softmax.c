/* SOFTMAX int8 -> int8 over the last axis, LiteRT's x86 path: a float table
 * of exp(-input_scale * beta * d) for every int8 distance d = max - x, a
 * sequential float sum, and std::round of each probability / output scale.
 * Every float step is written in the same order as LiteRT's C++ so the
 * result is bit-identical (the build disables FMA contraction). */
#include <math.h>

#include "internal.h"

void edged_softmax_table(float input_scale, float beta, float* table) {
  const float scale = -input_scale * beta;
  for (int32_t v = 0; v <= 255; ++v) table[255 - v] = expf(scale * (float)v);
}

void edged_softmax(const edged_op* op, int32_t batch) {
  const size_t depth = (size_t)op->in_c;
  const size_t rows = (size_t)op->count / depth;
  const float* table = (const float*)op->table;
  const float out_scale = op->scale;
  const int32_t zp = op->output_offset;

  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t r = 0; r < rows; ++r, x += depth, y += depth) {
      int32_t max_val = -128;
      for (size_t j = 0; j < depth; ++j) max_val = x[j] > max_val ? x[j] : max_val;
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
