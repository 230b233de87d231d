/* RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on int8 NHWC. The planner maps
 * every output row and column to input coordinates (LiteRT's float or
 * fixed-point arithmetic, done once); the kernel only gathers and blends. */
#include "internal.h"

static void resize_nearest(const edged_op* op, const int8_t* x, int8_t* y) {
  const size_t c = (size_t)op->in_c;
  for (int32_t oy = 0; oy < op->out_h; ++oy) {
    const int8_t* row = x + (size_t)op->rows[oy] * (size_t)op->in_w * c;
    for (int32_t ox = 0; ox < op->out_w; ++ox, y += c) memcpy(y, row + (size_t)op->cols[ox] * c, c);
  }
}

/* ResizeBilinearInteger's rounding: (v + sign(v) * 2^19) / 2^20, truncating. */
static int8_t bilinear_round(int64_t v) {
  const int64_t round = v > 0 ? (INT64_C(1) << 19) : -(INT64_C(1) << 19);
  return (int8_t)(uint8_t)(((v + round) / (INT64_C(1) << 20)) & 0xff);
}

static void resize_bilinear(const edged_op* op, const int8_t* x, int8_t* y) {
  const size_t c = (size_t)op->in_c, row_len = (size_t)op->in_w * c;
  for (int32_t oy = 0; oy < op->out_h; ++oy) {
    const int32_t* r = op->rows + 3 * (size_t)oy;
    const int8_t* top = x + (size_t)r[0] * row_len;
    const int8_t* bottom = x + (size_t)r[1] * row_len;
    const int64_t wy1 = r[2], wy0 = 1024 - (int64_t)r[2];
    for (int32_t ox = 0; ox < op->out_w; ++ox, y += c) {
      const int32_t* q = op->cols + 3 * (size_t)ox;
      const size_t x0 = (size_t)q[0] * c, x1 = (size_t)q[1] * c;
      const int64_t wx1 = q[2], wx0 = 1024 - (int64_t)q[2];
      for (size_t k = 0; k < c; ++k) {
        const int64_t sum = top[x0 + k] * wy0 * wx0 + bottom[x0 + k] * wy1 * wx0 +
                            top[x1 + k] * wy0 * wx1 + bottom[x1 + k] * wy1 * wx1;
        y[k] = bilinear_round(sum);
      }
    }
  }
}

void edged_resize(const edged_op* op, int32_t batch) {
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    if (op->mode == EDGED_RESIZE_NEAREST)
      resize_nearest(op, x, y);
    else
      resize_bilinear(op, x, y);
  }
}
