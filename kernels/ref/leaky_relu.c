/* LEAKY_RELU and PRELU int8 -> int8, as LiteRT's reference kernels (which its
 * int8 builds run): the non-negative side is rescaled by input/output scale,
 * the negative side by alpha's factor, both with MBQM (ties away from zero). */
#include "internal.h"

/* The non-negative side (input / output scale) and the output offset. */
static int8_t finish(const edged_op* op, int32_t v, int32_t negative_scaled) {
  const int32_t scaled = v >= 0 ? edged_mbqm(v, op->in_multiplier[0], op->in_shift[0]) : negative_scaled;
  return (int8_t)edged_clamp(edged_wadd(scaled, op->output_offset), -128, 127);
}

void edged_leaky_relu(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t i = 0; i < count; ++i) {
      const int32_t v = x[i] + op->input_offset;
      int32_t negative = 0;
      if (v < 0) {
        negative = edged_mbqm(v, op->in_multiplier[1], op->in_shift[1]);
        if (op->mode == 1) negative = (int32_t)(0u - (uint32_t)negative); /* wraps like int32 negation */
      }
      y[i] = finish(op, v, negative);
    }
  }
}

void edged_prelu(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  const int8_t* alpha = (const int8_t*)op->weights;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t i = 0; i < count; ++i) {
      const int32_t v = x[i] + op->input_offset;
      /* |v| <= 255 and |alpha + offset| <= 255: the product fits int32. */
      const int32_t negative =
          v < 0 ? edged_mbqm(v * (alpha[i] + op->in_offset[1]), op->in_multiplier[1], op->in_shift[1]) : 0;
      y[i] = finish(op, v, negative);
    }
  }
}
