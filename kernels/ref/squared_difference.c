/* SQUARED_DIFFERENCE int8, LiteRT's scalar kernel: both operands rescaled to
 * a common scale with 7 extra bits, the difference squared in int32, then
 * rescaled to the output (MBQM everywhere, ties away from zero). */
#include "internal.h"

static int32_t scaled(int8_t v, const edged_op* op, int k) {
  const int32_t shifted = (int32_t)((uint32_t)(v + op->in_offset[k]) << op->left_shift);
  return edged_mbqm(shifted, op->in_multiplier[k], op->in_shift[k]);
}

void edged_squared_difference(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    const int8_t* z = op->n_in == 2 ? (const int8_t*)op->in[1] + (size_t)b * (size_t)op->in_stride[1]
                                    : (const int8_t*)op->weights;
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t i = 0; i < count; ++i) {
      const int32_t diff = (int32_t)((uint32_t)scaled(x[i], op, 0) - (uint32_t)scaled(z[i], op, 1));
      const int32_t square = (int32_t)(uint32_t)((int64_t)diff * diff);
      const int32_t v = edged_wadd(edged_mbqm(square, op->multiplier, op->shift), op->output_offset);
      y[i] = (int8_t)edged_clamp(v, -128, 127);
    }
  }
}
