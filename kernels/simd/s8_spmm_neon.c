/* Block-sparse int8 GEMM (s8_spmm) for baseline AArch64 (Armv8.0 NEON, no
 * dot product).
 *
 * Products come from smull/smull2 (exact in int16, |x*w| <= 2^14) and are
 * folded pairwise into int32 lanes by sadalp. We never accumulate two
 * products in int16 first (smlal): (-128)*(-128) + (-128)*(-128) = 2^15
 * overflows int16, and weights and activations may both be -128. The packed
 * `term` (bias + input_offset * rowsum) is the only zero-point work.
 * Block shapes with a kernel here (blocks are row-major, channel then depth):
 *   4x4, 8x4, 16x4  each 16 weight bytes are 4 channels x 4 depth steps; the
 *                   block's 4 activations are broadcast to all 16 bytes, so
 *                   smull of the low half gives the products of channels 0-1,
 *                   smull2 those of channels 2-3, and sadalp leaves 2 lanes per
 *                   channel in each of two accumulators; one pairwise add at
 *                   the end of the block row makes them 4 channel sums.
 *   1x16            one channel x 16 depth steps: smull/smull2 against the 16
 *                   activations, sadalp into two accumulators (two dependency
 *                   chains), reduced at the end of the block row.
 * Every other shape runs edged_s8_spmm_ref.
 *
 * Bit-exactness: the reference accumulates mod 2^32; sadalp and int32 adds
 * wrap the same way and add up the same exact products, so the sums agree
 * for every input, and edged_rq4_apply is the scalar requantization. Padding
 * channels past out_c (zero weights, zero term) are computed, never stored.
 *
 * Ragged depth: when depth % block_cols != 0 the last block column ends past
 * the activation row. Block columns of a block row are strictly increasing,
 * so only the last block of a row can be in it; that block is fed from a
 * zero-padded copy of the row's tail (the weights there are zero anyway), and
 * no load ever leaves the activation row or the packed buffer.
 *
 * Batches are cut into row tiles (4, then 2, then 1 rows; 2 at most for 16x4,
 * whose 8 accumulators per row would not fit 4 rows in 32 registers); a tile
 * walks the whole matrix, so its activation rows stay in L1 while the
 * (sparse, so small) weights stream, and each loaded weight vector feeds
 * every row of the tile. For one row of 4x4 blocks, two accumulator sets on
 * alternate blocks keep four sadalp chains in flight instead of two.
 */
#include "internal.h"

#if defined(__aarch64__)
#include "neon_spmm.h"

/* 4 activation bytes in every 32-bit lane (one ld1r). */
EDGED_INLINE int8x16_t dup_quad(const int8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4); /* unaligned, and no type punning */
  return vreinterpretq_s8_u32(vdupq_n_u32(v));
}

/* ---- 4x4, 8x4, 16x4: NV = block_rows / 4 vectors per block ---------------- */

/* One block (weights w) into the tile rows' accumulators, activations xp[r].
 * acc[r][2v] collects channels 4v, 4v+1 and acc[r][2v+1] channels 4v+2,
 * 4v+3, two lanes each. */
EDGED_INLINE void kx4_block(int32x4_t acc[4][8], const int8_t* w, const int8_t* const* xp,
                            const int NV, const int ROWS) {
  int8x16_t xq[4];
  for (int r = 0; r < ROWS; ++r) xq[r] = dup_quad(xp[r]);
  for (int v = 0; v < NV; ++v) {
    const int8x16_t wv = vld1q_s8(w + 16 * v);
    for (int r = 0; r < ROWS; ++r) {
      acc[r][2 * v] = vpadalq_s16(acc[r][2 * v], vmull_s8(vget_low_s8(wv), vget_low_s8(xq[r])));
      acc[r][2 * v + 1] = vpadalq_s16(acc[r][2 * v + 1], vmull_high_s8(wv, xq[r]));
    }
  }
}

EDGED_INLINE void tile_kx4(const spmm_plan* s, const int8_t* a, size_t a_stride, int8_t* c,
                           size_t c_stride, const edged_requant* rq, const int NV, const int ROWS,
                           const int IB) {
  const int SETS = ROWS == 1 && NV == 1 ? 2 : 1;
  const size_t br = 4 * (size_t)NV, block_bytes = 16 * (size_t)NV;
  const int8_t* x[4];
  int8_t tail[4][16];
  for (int r = 0; r < ROWS; ++r) x[r] = a + (size_t)r * a_stride;
  make_tails(s, x, ROWS, tail);

  for (size_t i = 0; i < s->n_brows; ++i) {
    const size_t k0 = (size_t)s->row_ptr[i], k1 = (size_t)s->row_ptr[i + 1];
    const size_t kb = body_end(s, k0, k1, IB);
    int32x4_t acc[2][4][8];
    for (int u = 0; u < SETS; ++u)
      for (int r = 0; r < ROWS; ++r)
        for (int v = 0; v < 2 * NV; ++v) acc[u][r][v] = vdupq_n_s32(0);

    size_t k = k0;
    for (; k + (size_t)SETS <= kb; k += (size_t)SETS)
      for (int u = 0; u < SETS; ++u) {
        const size_t d = col_at(s->idx, k + (size_t)u, IB) * 4;
        const int8_t* xp[4];
        for (int r = 0; r < ROWS; ++r) xp[r] = x[r] + d;
        kx4_block(acc[u], s->values + (k + (size_t)u) * block_bytes, xp, NV, ROWS);
      }
    if (SETS == 2 && k < kb) {
      const size_t d = col_at(s->idx, k, IB) * 4;
      const int8_t* xp[4];
      for (int r = 0; r < ROWS; ++r) xp[r] = x[r] + d;
      kx4_block(acc[0], s->values + k * block_bytes, xp, NV, ROWS);
    }
    if (kb < k1) {
      const int8_t* xp[4];
      for (int r = 0; r < ROWS; ++r) xp[r] = tail[r];
      kx4_block(acc[0], s->values + kb * block_bytes, xp, NV, ROWS);
    }
    if (SETS == 2)
      for (int r = 0; r < ROWS; ++r)
        for (int v = 0; v < 2 * NV; ++v) acc[0][r][v] = vaddq_s32(acc[0][r][v], acc[1][r][v]);

    /* term holds n_brows * br entries (zero on padding channels). */
    const size_t o = i * br;
    const size_t count = s->n - o < br ? s->n - o : br;
    edged_rq4 p[4];
    int32x4_t t[4];
    for (int v = 0; v < NV; ++v) {
      edged_rq4_load(&p[v], rq, o + 4 * (size_t)v, s->n);
      t[v] = vld1q_s32(s->term + o + 4 * (size_t)v);
    }
    for (int r = 0; r < ROWS; ++r) {
      int32x4_t out[4];
      for (int v = 0; v < NV; ++v) {
        const int32x4_t sum = vpaddq_s32(acc[0][r][2 * v], acc[0][r][2 * v + 1]);
        out[v] = edged_rq4_apply(&p[v], vaddq_s32(sum, t[v]), rq);
      }
      store_s8(out, c + (size_t)r * c_stride + o, count, NV);
    }
  }
}

/* ---- 1x16: one channel per block row, 4 channels per output vector -------- */

/* One 1x16 block into the tile rows' low-half and high-half accumulators. */
EDGED_INLINE void x16_block(int32x4_t* lo, int32x4_t* hi, const int8_t* w,
                            const int8_t* const* xp, const int ROWS) {
  const int8x16_t wv = vld1q_s8(w);
  for (int r = 0; r < ROWS; ++r) {
    const int8x16_t xv = vld1q_s8(xp[r]);
    lo[r] = vpadalq_s16(lo[r], vmull_s8(vget_low_s8(wv), vget_low_s8(xv)));
    hi[r] = vpadalq_s16(hi[r], vmull_high_s8(wv, xv));
  }
}

/* acc[r] = 4 partial sums of channel (block row) i for each tile row. */
EDGED_INLINE void chan_1x16(const spmm_plan* s, size_t i, const int8_t* const* x,
                            int8_t tail[][16], int32x4_t* acc, const int ROWS, const int IB) {
  const size_t k0 = (size_t)s->row_ptr[i], k1 = (size_t)s->row_ptr[i + 1];
  const size_t kb = body_end(s, k0, k1, IB);
  int32x4_t lo[4], hi[4];
  for (int r = 0; r < ROWS; ++r) lo[r] = hi[r] = vdupq_n_s32(0);

  for (size_t k = k0; k < kb; ++k) {
    const int8_t* xp[4];
    const size_t d = col_at(s->idx, k, IB) * 16;
    for (int r = 0; r < ROWS; ++r) xp[r] = x[r] + d;
    x16_block(lo, hi, s->values + 16 * k, xp, ROWS);
  }
  if (kb < k1) {
    const int8_t* xp[4];
    for (int r = 0; r < ROWS; ++r) xp[r] = tail[r];
    x16_block(lo, hi, s->values + 16 * kb, xp, ROWS);
  }
  for (int r = 0; r < ROWS; ++r) acc[r] = vaddq_s32(lo[r], hi[r]);
}

/* Channels come in groups of 4: each one's partial sums are folded by two
 * pairwise adds into one vector of 4 channel sums, which is requantized like
 * a 4-channel block. */
EDGED_INLINE void tile_1x16(const spmm_plan* s, const int8_t* a, size_t a_stride, int8_t* c,
                            size_t c_stride, const edged_requant* rq, const int no_param,
                            const int ROWS, const int IB) {
  (void)no_param; /* the drivers pass every tile a shape parameter */
  const int8_t* x[4];
  int8_t tail[4][16];
  for (int r = 0; r < ROWS; ++r) x[r] = a + (size_t)r * a_stride;
  make_tails(s, x, ROWS, tail);

  for (size_t g = 0; g < s->n; g += 4) {
    const size_t count = s->n - g < 4 ? s->n - g : 4;
    int32x4_t acc[4][4]; /* [channel in group][row] */
    for (size_t q = 0; q < 4; ++q) {
      if (q < count) {
        chan_1x16(s, g + q, x, tail, acc[q], ROWS, IB);
      } else {
        for (int r = 0; r < ROWS; ++r) acc[q][r] = vdupq_n_s32(0);
      }
    }
    /* term holds exactly out_c entries here (block_rows is 1). */
    int32x4_t t;
    if (count == 4) {
      t = vld1q_s32(s->term + g);
    } else {
      int32_t tb[4] = {0, 0, 0, 0};
      for (size_t q = 0; q < count; ++q) tb[q] = s->term[g + q];
      t = vld1q_s32(tb);
    }
    edged_rq4 p;
    edged_rq4_load(&p, rq, g, s->n);
    for (int r = 0; r < ROWS; ++r) {
      const int32x4_t sum = vpaddq_s32(vpaddq_s32(acc[0][r], acc[1][r]), vpaddq_s32(acc[2][r], acc[3][r]));
      const int32x4_t out = edged_rq4_apply(&p, vaddq_s32(sum, t), rq);
      store_s8(&out, c + (size_t)r * c_stride + g, count, 1);
    }
  }
}

/* ---- drivers: one function per (shape, index width) ----------------------- */

/* Row tiles of RMAX (4 or 2), then 2, then 1, each a constant for the
 * inlined tile. */
#define EDGED_SPMM_DRIVER(NAME, TILE, P, RMAX, IB)                                             \
  static void NAME(const spmm_plan* s, size_t m, const int8_t* a, size_t a_stride, int8_t* c, \
                   size_t c_stride, const edged_requant* rq) {                                \
    size_t r = 0;                                                                              \
    for (; r + RMAX <= m; r += RMAX)                                                           \
      TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, RMAX, IB);        \
    if (RMAX > 2 && r + 2 <= m) {                                                              \
      TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, 2, IB);           \
      r += 2;                                                                                  \
    }                                                                                          \
    if (r < m) TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, 1, IB);  \
  }

EDGED_SPMM_DRIVER(run_4x4_u8, tile_kx4, 1, 4, 1)
EDGED_SPMM_DRIVER(run_4x4_u16, tile_kx4, 1, 4, 2)
EDGED_SPMM_DRIVER(run_8x4_u8, tile_kx4, 2, 4, 1)
EDGED_SPMM_DRIVER(run_8x4_u16, tile_kx4, 2, 4, 2)
EDGED_SPMM_DRIVER(run_16x4_u8, tile_kx4, 4, 2, 1)
EDGED_SPMM_DRIVER(run_16x4_u16, tile_kx4, 4, 2, 2)
EDGED_SPMM_DRIVER(run_1x16_u8, tile_1x16, 0, 4, 1)
EDGED_SPMM_DRIVER(run_1x16_u16, tile_1x16, 0, 4, 2)
#undef EDGED_SPMM_DRIVER

typedef void (*spmm_driver)(const spmm_plan*, size_t, const int8_t*, size_t, int8_t*, size_t,
                            const edged_requant*);

void edged_s8_spmm_neon(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  const int br = h->block_rows, bc = h->block_cols, u8 = h->index_bytes == 1;
  spmm_driver run = NULL;
  if (bc == 4 && br == 4) run = u8 ? run_4x4_u8 : run_4x4_u16;
  else if (bc == 4 && br == 8) run = u8 ? run_8x4_u8 : run_8x4_u16;
  else if (bc == 4 && br == 16) run = u8 ? run_16x4_u8 : run_16x4_u16;
  else if (bc == 16 && br == 1) run = u8 ? run_1x16_u8 : run_1x16_u16;
  if (run == NULL) {
    edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
    return;
  }
  const size_t depth = (size_t)h->depth;
  spmm_plan s;
  s.row_ptr = edged_sparse_row_ptr(h);
  s.idx = edged_sparse_indices(h);
  s.term = edged_sparse_terms(h);
  s.values = edged_sparse_values(h);
  s.n = (size_t)h->out_c;
  s.n_brows = (size_t)h->n_block_rows;
  s.bc = (size_t)bc;
  s.ragged_col = depth % s.bc ? depth / s.bc : SIZE_MAX;
  s.ragged_len = depth % s.bc;
  run(&s, m, a, a_stride, c, c_stride, rq);
}

#else
typedef int edged_s8_spmm_neon_unused;
#endif
