/* BATCH_MATMUL int8, LiteRT's reference kernel: per matrix, the int32 sum of
 * offset products, MBQM (ties away from zero), output offset, int8 clamp. The
 * planner gives each operand's strides, so adj_x / adj_y need no transpose. */
#include "internal.h"

void edged_batch_matmul(const edged_op* op, int32_t batch) {
  const int32_t m = op->in_h, k = op->in_c, p = op->out_c;
  const int64_t xr = op->view_stride[0], xk = op->view_stride[1];
  const int64_t zk = op->view_stride[2], zc = op->view_stride[3];
  const size_t x_size = (size_t)m * (size_t)k, z_size = (size_t)k * (size_t)p, y_size = (size_t)m * (size_t)p;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    const int8_t* z = op->n_in == 2 ? (const int8_t*)op->in[1] + (size_t)b * (size_t)op->in_stride[1]
                                    : (const int8_t*)op->weights;
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t g = 0; g < op->outer; ++g, x += x_size, z += z_size, y += y_size) {
      for (int32_t i = 0; i < m; ++i) {
        for (int32_t j = 0; j < p; ++j) {
          int32_t total = 0;
          for (int32_t d = 0; d < k; ++d) {
            const int32_t a = x[i * xr + d * xk] + op->input_offset;
            const int32_t c = z[d * zk + j * zc] + op->in_offset[1];
            total = edged_wadd(total, a * c);
          }
          const int32_t v = edged_wadd(edged_mbqm(total, op->multiplier, op->shift), op->output_offset);
          y[(size_t)i * (size_t)p + (size_t)j] = (int8_t)edged_clamp(v, -128, 127);
        }
      }
    }
  }
}
