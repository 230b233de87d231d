/* CONV_2D as im2col + the int8 GEMM (dense or block-sparse weights).
 *
 * Output pixels are the GEMM rows and (kh, kw, in_c) the depth, matching the
 * [out_c, kh, kw, in_c] filter rows. Padding taps are filled with the input
 * zero point, so (x + input_offset) is 0 there and the folded bias term stays
 * exact. im2col works on chunks of rows so the patch buffer stays in cache;
 * a 1x1, stride-1, unpadded convolution skips it and reads the input as is.
 * With dense AVX-512 VNNI weights and in_c % 4 == 0 the variant's own
 * kernel reads the windows in place (simd/s8_conv_avx512vnni.c).
 */
#include "internal.h"

/* Rows per im2col chunk: about 64 KiB of patches, at least one 4-row tile. */
static size_t chunk_rows(const edged_op* op) {
  const size_t depth = (size_t)op->filter_h * (size_t)op->filter_w * (size_t)op->in_c;
  const size_t rows = (size_t)op->out_h * (size_t)op->out_w;
  size_t chunk = (64u * 1024u) / depth;
  if (chunk < 4) chunk = 4;
  chunk -= chunk % 4;
  return chunk < rows ? chunk : rows;
}

static int is_pointwise(const edged_op* op) {
  return op->filter_h == 1 && op->filter_w == 1 && op->stride_h == 1 && op->stride_w == 1 &&
         op->pad_top == 0 && op->pad_left == 0 && op->out_h == op->in_h && op->out_w == op->in_w;
}

/* Whether the descriptor runs on the direct VNNI kernel. */
static int takes_direct(const edged_op* op) {
#if defined(__x86_64__)
  return op->variant == EDGED_VARIANT_AVX512VNNI && op->weight_format == EDGED_WEIGHTS_DENSE &&
         !is_pointwise(op) && edged_s8_conv_avx512vnni_scratch(op) != 0;
#else
  (void)op;
  return 0;
#endif
}

/* Independent of the variant, so a plan sized once can switch kernels. */
size_t edged_conv_2d_scratch_size(const edged_op* op) {
  if (is_pointwise(op)) return 0;
  const size_t depth = (size_t)op->filter_h * (size_t)op->filter_w * (size_t)op->in_c;
  const size_t patches = chunk_rows(op) * depth;
#if defined(__x86_64__)
  const size_t padded = edged_s8_conv_avx512vnni_scratch(op);
  return padded > patches ? padded : patches;
#else
  return patches;
#endif
}

/* n padding bytes; `pad` holds 64 of them, enough for every short fill. */
EDGED_INLINE void fill_run(int8_t* dst, const int8_t* pad, int8_t fill, size_t n) {
  if (n > 64) {
    memset(dst, fill, n);
  } else {
    edged_copy_bytes(dst, pad, n);
  }
}

static void im2col(const edged_op* op, const int8_t* x, size_t first, size_t count, int8_t* dst) {
  /* Geometry in locals: dst is int8_t*, which may alias anything, so the
   * compiler would otherwise reload every op field after each byte stored. */
  const int8_t fill = (int8_t)(-op->input_offset);
  int8_t pad[64];
  memset(pad, fill, sizeof pad);
  const size_t in_c = (size_t)op->in_c;
  const int32_t in_h = op->in_h, in_w = op->in_w, out_w = op->out_w;
  const int32_t fh = op->filter_h, fw = op->filter_w, sh = op->stride_h, sw = op->stride_w;
  const int32_t dh = op->dilation_h, dw = op->dilation_w, pt = op->pad_top, pl = op->pad_left;
  const size_t run = (size_t)fw * in_c;
  int32_t oy = (int32_t)(first / (size_t)out_w), ox = (int32_t)(first % (size_t)out_w);
  for (size_t r = 0; r < count; ++r) {
    const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
    /* With no horizontal dilation, a window row fully inside the input is
     * one contiguous run of filter_w * in_c bytes. */
    const int cols_inside = dw == 1 && ix0 >= 0 && ix0 + fw <= in_w;
    for (int32_t ky = 0; ky < fh; ++ky) {
      const int32_t iy = iy0 + ky * dh;
      if (iy < 0 || iy >= in_h) { /* the whole window row is padding */
        fill_run(dst, pad, fill, run);
        dst += run;
        continue;
      }
      const int8_t* src_row = x + (size_t)iy * (size_t)in_w * in_c;
      if (cols_inside) {
        edged_copy_bytes(dst, src_row + (size_t)ix0 * in_c, run);
        dst += run;
        continue;
      }
      for (int32_t kx = 0; kx < fw; ++kx) {
        const int32_t ix = ix0 + kx * dw;
        if (ix >= 0 && ix < in_w) {
          edged_copy_bytes(dst, src_row + (size_t)ix * in_c, in_c);
        } else {
          fill_run(dst, pad, fill, in_c);
        }
        dst += in_c;
      }
    }
    if (++ox == out_w) {
      ox = 0;
      ++oy;
    }
  }
}

void edged_conv_2d(const edged_op* op, int32_t batch) {
  const edged_s8_gemm_fn gemm = edged_matmul_get(op);
  const size_t rows = (size_t)op->out_h * (size_t)op->out_w, n = (size_t)op->out_c;
  const size_t depth = (size_t)op->filter_h * (size_t)op->filter_w * (size_t)op->in_c;
  const edged_requant rq = edged_requant_of(op, 0, edged_rounds_once(op, (int64_t)rows * batch, (int64_t)depth));

  const int direct = takes_direct(op);
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
#if defined(__x86_64__)
    if (direct) {
      edged_s8_conv_avx512vnni(op, x, op->scratch, y, &rq);
      continue;
    }
#else
    (void)direct;
#endif
    if (is_pointwise(op)) {
      gemm(rows, x, depth, op->weights, y, n, &rq);
      continue;
    }
    const size_t chunk = chunk_rows(op);
    int8_t* patches = (int8_t*)op->scratch;
    for (size_t r = 0; r < rows; r += chunk) {
      const size_t count = rows - r < chunk ? rows - r : chunk;
      im2col(op, x, r, count, patches);
      gemm(count, patches, depth, op->weights, y + r * n, n, &rq);
    }
  }
}
