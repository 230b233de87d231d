/* RELU / RELU6 / RELU_N1_TO_1 int8 -> int8 (LiteRT's QuantizedReluX):
 * rescale by input/output scale (MBQM, ties away from zero), then clamp. */
#include "internal.h"

void edged_relu(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t i = 0; i < count; ++i) {
      const int32_t v = edged_wadd(edged_mbqm(x[i] + op->input_offset, op->multiplier, op->shift),
                                   op->output_offset);
      y[i] = (int8_t)edged_clamp(v, op->act_min, op->act_max);
    }
  }
}
