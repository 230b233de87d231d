/* LOGISTIC int8 -> int8 through LiteRT's 256-entry table (LUTPopulate). */
#include <math.h>

#include "internal.h"

void edged_logistic_table(float input_scale, int32_t input_zero_point, float output_scale,
                          int32_t output_zero_point, int8_t* table) {
  const float inverse_scale = 1.0f / output_scale;
  for (int32_t v = -128; v <= 127; ++v) {
    const float dequantized = input_scale * (float)(v - input_zero_point);
    const float transformed = 1.0f / (1.0f + expf(-dequantized));
    const float rescaled = roundf(transformed * inverse_scale);
    float q = rescaled + (float)output_zero_point;
    if (!(q < 1048576.0f)) q = 1048576.0f; /* keep the int conversion defined */
    if (q < -1048576.0f) q = -1048576.0f;
    table[(uint8_t)(int8_t)v] = (int8_t)edged_clamp((int32_t)q, -128, 127);
  }
}

void edged_logistic(const edged_op* op, int32_t batch) {
  const int8_t* table = (const int8_t*)op->table;
  const size_t count = (size_t)op->count;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t i = 0; i < count; ++i) y[i] = table[(uint8_t)x[i]];
  }
}
