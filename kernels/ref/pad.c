/* PAD of a per-sample [h, w, c] int8 tensor with a constant (the output
 * zero point): rows and pixels outside the input are filled, input pixels
 * are copied between their channel padding. */
#include "internal.h"

void edged_pad(const edged_op* op, int32_t batch) {
  const int8_t fill = (int8_t)op->output_offset;
  const size_t in_c = (size_t)op->in_c, out_c = (size_t)op->out_c;
  const size_t c_before = (size_t)op->pad_before[2], c_after = (size_t)op->pad_after[2];
  const size_t out_row = (size_t)op->out_w * out_c;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      int8_t* yr = y + (size_t)oy * out_row;
      const int32_t iy = oy - op->pad_before[0];
      if (iy < 0 || iy >= op->in_h) {
        memset(yr, fill, out_row);
        continue;
      }
      if (c_before == 0 && c_after == 0) { /* spatial padding only: one run per row */
        const size_t left = (size_t)op->pad_before[1] * out_c, run = (size_t)op->in_w * in_c;
        memset(yr, fill, left);
        memcpy(yr + left, x + (size_t)iy * run, run);
        memset(yr + left + run, fill, out_row - left - run);
        continue;
      }
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        int8_t* yp = yr + (size_t)ox * out_c;
        const int32_t ix = ox - op->pad_before[1];
        if (ix < 0 || ix >= op->in_w) {
          memset(yp, fill, out_c);
          continue;
        }
        memset(yp, fill, c_before);
        memcpy(yp + c_before, x + ((size_t)iy * (size_t)op->in_w + (size_t)ix) * in_c, in_c);
        memset(yp + c_before + in_c, fill, c_after);
      }
    }
  }
}
