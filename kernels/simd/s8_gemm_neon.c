/* int8 GEMM for baseline AArch64 (Armv8.0 NEON, no dot product).
 *
 * smull/smull2 give exact int16 products (|x*w| <= 2^14) and sadalp folds
 * them pairwise into int32 lanes. Accumulating two products in int16 first
 * (smlal) would overflow for (-128)*(-128) + (-128)*(-128), so we don't.
 *
 * Weights are blocks of 8 output channels; each 128-byte step holds 16 depth
 * values of each of the 8 channels, so one 16-byte load per channel feeds
 * 16 multiply-accumulates. Each channel owns an int32x4 accumulator that is
 * reduced with pairwise adds at the end of the tile.
 */
#include "internal.h"

#if defined(__aarch64__)
#include "neon_requant.h"

/* ROWS rows times 8 channels (one block). Rows past the end of the matrix
 * alias the last real row and are not stored. */
static inline __attribute__((always_inline)) void tile_8(const int8_t* a, size_t a_stride,
                                                         size_t rows, const int8_t* w,
                                                         size_t k_pad, size_t depth,
                                                         const int32_t* term, size_t o, size_t n,
                                                         const edged_requant* rq, int8_t* c,
                                                         size_t c_stride, const int ROWS) {
  const int8_t* x[2];
  for (int i = 0; i < ROWS; ++i) x[i] = a + ((size_t)i < rows ? (size_t)i : rows - 1) * a_stride;
  const size_t full = depth / 16, slices = k_pad / 16;
  /* Zero-padded copy of each row's partial last slice, made before any
   * accumulator is live (the copy may be a library call). */
  int8_t tail[2][16];
  if (full < slices)
    for (int i = 0; i < ROWS; ++i) {
      memset(tail[i], 0, 16);
      memcpy(tail[i], x[i] + 16 * full, depth - 16 * full);
    }

  int32x4_t acc[2][8];
  for (int i = 0; i < ROWS; ++i)
    for (int j = 0; j < 8; ++j) acc[i][j] = vdupq_n_s32(0);

  for (size_t s = 0; s < slices; ++s) {
    int8x16_t xv[2];
    for (int i = 0; i < ROWS; ++i) xv[i] = vld1q_s8(s < full ? x[i] + 16 * s : tail[i]);
    const int8_t* ws = w + s * 128;
    for (int j = 0; j < 8; ++j) {
      const int8x16_t wv = vld1q_s8(ws + 16 * j);
      for (int i = 0; i < ROWS; ++i) {
        acc[i][j] = vpadalq_s16(acc[i][j], vmull_s8(vget_low_s8(xv[i]), vget_low_s8(wv)));
        acc[i][j] = vpadalq_s16(acc[i][j], vmull_high_s8(xv[i], wv));
      }
    }
  }

  edged_rq4 p0, p1;
  edged_rq4_load(&p0, rq, o, n);
  edged_rq4_load(&p1, rq, o + 4, n);
  const int32x4_t t0 = vld1q_s32(term + o), t1 = vld1q_s32(term + o + 4);
  const size_t count = n - o < 8 ? n - o : 8;
  for (int i = 0; i < ROWS && (size_t)i < rows; ++i) {
    int32x4_t v[4];
    const int32x4_t s0 = vpaddq_s32(vpaddq_s32(acc[i][0], acc[i][1]), vpaddq_s32(acc[i][2], acc[i][3]));
    const int32x4_t s1 = vpaddq_s32(vpaddq_s32(acc[i][4], acc[i][5]), vpaddq_s32(acc[i][6], acc[i][7]));
    v[0] = edged_rq4_apply(&p0, vaddq_s32(s0, t0), rq);
    v[1] = edged_rq4_apply(&p1, vaddq_s32(s1, t1), rq);
    v[2] = v[3] = vdupq_n_s32(0);
    edged_store_s8x16(v, c + (size_t)i * c_stride + o, count);
  }
}

void edged_s8_gemm_neon(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  const size_t n = (size_t)h->out_c, depth = (size_t)h->depth, k_pad = (size_t)h->k_pad;
  const size_t nblocks = (size_t)h->n_pad / 8;
  const int32_t* term = edged_packed_terms(packed);
  const int8_t* w = edged_packed_weights(packed);

  for (size_t b = 0; b < nblocks; ++b) {
    const int8_t* wb = w + b * 8 * k_pad;
    if (m == 1) {
      tile_8(a, a_stride, 1, wb, k_pad, depth, term, 8 * b, n, rq, c, c_stride, 1);
      continue;
    }
    for (size_t r = 0; r < m; r += 2)
      tile_8(a + r * a_stride, a_stride, m - r < 2 ? m - r : 2, wb, k_pad, depth, term, 8 * b, n,
             rq, c + r * c_stride, c_stride, 2);
  }
}

#else
typedef int edged_s8_gemm_neon_unused;
#endif
