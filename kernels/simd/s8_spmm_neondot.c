/* Block-sparse int8 GEMM (s8_spmm) for AArch64 with the Armv8.2 dot-product
 * extension (sdot).
 *
 * sdot is signed x signed, so the packed `term` (bias + input_offset *
 * rowsum) is the only zero-point work; activations are used as they are.
 * Block shapes with a kernel here (the packed buffer stores every block
 * row-major, channel then depth):
 *   4x4, 8x4, 16x4  a block is 1, 2 or 4 vectors of "4 channels x 4 depth
 *                   steps"; sdot of each against the block's 4 activations
 *                   broadcast to every lane leaves one sum per channel, so the
 *                   accumulators are per channel and need no reduction.
 *   1x16            one channel x 16 depth steps: sdot of the 16 weights with
 *                   the 16 activations adds 4 partial sums (one per lane),
 *                   reduced once at the end of the block row.
 *   1x4             one channel x 4 depth steps: 4 consecutive blocks of a
 *                   block row are 16 consecutive weight bytes, so their 4
 *                   activation quads are gathered into the lanes of one vector
 *                   and one sdot does all 4 blocks.
 * Every other shape runs edged_s8_spmm_ref.
 *
 * Bit-exactness: the reference accumulates mod 2^32; int32 lane adds wrap
 * the same way and add up the same products (each sdot group of 4 is exact),
 * so the sums agree for every input, and edged_rq4_apply is the scalar
 * requantization. Padding channels past out_c (zero weights, zero term) are
 * computed and never stored.
 *
 * Ragged depth: when depth % block_cols != 0 the last block column ends past
 * the activation row. Block columns of a block row are strictly increasing,
 * so only the last block of a row can be in it; that block is fed from a
 * zero-padded copy of the row's tail (the weights there are zero anyway), and
 * no load ever leaves the activation row or the packed buffer.
 *
 * Batches are cut into tiles of 4, 2 and 1 rows; a tile walks the whole
 * matrix, so its activation rows stay in L1 while the (sparse, so small)
 * weights stream, and each loaded weight vector feeds every row of the tile.
 * Single rows (GEMV) of 4x4, 8x4 and 1x16 blocks use two accumulator sets on
 * alternate blocks, since one set would leave only one or two sdot
 * dependency chains (16x4 has four already).
 *
 * Built for Armv8.2-A + dotprod by pragma so the file compiles under plain
 * -march=armv8-a; edged_cpu_variants() decides whether it may run.
 */
#include "internal.h"

#if defined(__aarch64__)
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#include "neon_spmm.h"

EDGED_INLINE uint32_t ld_u32(const int8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4); /* unaligned, and no type punning */
  return v;
}

/* 4 activation bytes in every 32-bit lane (one ld1r). */
EDGED_INLINE int8x16_t dup_quad(const int8_t* p) {
  return vreinterpretq_s8_u32(vdupq_n_u32(ld_u32(p)));
}

/* ---- 4x4, 8x4, 16x4: NV = block_rows / 4 vectors per block ---------------- */

/* One block (weights w) into acc[r][v] for every tile row, activations xp[r]. */
EDGED_INLINE void kx4_block(int32x4_t acc[4][4], const int8_t* w, const int8_t* const* xp,
                            const int NV, const int ROWS) {
  int8x16_t xq[4];
  for (int r = 0; r < ROWS; ++r) xq[r] = dup_quad(xp[r]);
  for (int v = 0; v < NV; ++v) {
    const int8x16_t wv = vld1q_s8(w + 16 * v);
    for (int r = 0; r < ROWS; ++r) acc[r][v] = vdotq_s32(acc[r][v], wv, xq[r]);
  }
}

EDGED_INLINE void tile_kx4(const spmm_plan* s, const int8_t* a, size_t a_stride, int8_t* c,
                           size_t c_stride, const edged_requant* rq, const int NV, const int ROWS,
                           const int IB) {
  const int SETS = ROWS == 1 && NV < 4 ? 2 : 1;
  const size_t br = 4 * (size_t)NV, block_bytes = 16 * (size_t)NV;
  const int8_t* x[4];
  int8_t tail[4][16];
  for (int r = 0; r < ROWS; ++r) x[r] = a + (size_t)r * a_stride;
  make_tails(s, x, ROWS, tail);

  for (size_t i = 0; i < s->n_brows; ++i) {
    const size_t k0 = (size_t)s->row_ptr[i], k1 = (size_t)s->row_ptr[i + 1];
    const size_t kb = body_end(s, k0, k1, IB);
    int32x4_t acc[2][4][4];
    for (int u = 0; u < SETS; ++u)
      for (int r = 0; r < ROWS; ++r)
        for (int v = 0; v < NV; ++v) acc[u][r][v] = vdupq_n_s32(0);

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
        for (int v = 0; v < NV; ++v) acc[0][r][v] = vaddq_s32(acc[0][r][v], acc[1][r][v]);

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
      for (int v = 0; v < NV; ++v)
        out[v] = edged_rq4_apply(&p[v], vaddq_s32(acc[0][r][v], t[v]), rq);
      store_s8(out, c + (size_t)r * c_stride + o, count, NV);
    }
  }
}

/* ---- 1x16 and 1x4: one channel per block row, 4 channels per output vector */

/* acc[r] = 4 partial sums of channel (block row) i for each tile row. */
EDGED_INLINE void chan_1x16(const spmm_plan* s, size_t i, const int8_t* const* x,
                            int8_t tail[][16], int32x4_t* acc, const int ROWS, const int IB) {
  const int SETS = ROWS == 1 ? 2 : 1;
  const size_t k0 = (size_t)s->row_ptr[i], k1 = (size_t)s->row_ptr[i + 1];
  const size_t kb = body_end(s, k0, k1, IB);
  int32x4_t a2[2][4];
  for (int u = 0; u < SETS; ++u)
    for (int r = 0; r < ROWS; ++r) a2[u][r] = vdupq_n_s32(0);

  size_t k = k0;
  for (; k + (size_t)SETS <= kb; k += (size_t)SETS)
    for (int u = 0; u < SETS; ++u) {
      const int8x16_t w = vld1q_s8(s->values + 16 * (k + (size_t)u));
      const size_t d = col_at(s->idx, k + (size_t)u, IB) * 16;
      for (int r = 0; r < ROWS; ++r) a2[u][r] = vdotq_s32(a2[u][r], w, vld1q_s8(x[r] + d));
    }
  if (SETS == 2 && k < kb) {
    const int8x16_t w = vld1q_s8(s->values + 16 * k);
    const size_t d = col_at(s->idx, k, IB) * 16;
    for (int r = 0; r < ROWS; ++r) a2[0][r] = vdotq_s32(a2[0][r], w, vld1q_s8(x[r] + d));
  }
  if (kb < k1) {
    const int8x16_t w = vld1q_s8(s->values + 16 * kb);
    for (int r = 0; r < ROWS; ++r) a2[0][r] = vdotq_s32(a2[0][r], w, vld1q_s8(tail[r]));
  }
  for (int r = 0; r < ROWS; ++r) acc[r] = SETS == 2 ? vaddq_s32(a2[0][r], a2[1][r]) : a2[0][r];
}

EDGED_INLINE void chan_1x4(const spmm_plan* s, size_t i, const int8_t* const* x,
                           int8_t tail[][16], int32x4_t* acc, const int ROWS, const int IB) {
  const size_t k0 = (size_t)s->row_ptr[i], k1 = (size_t)s->row_ptr[i + 1];
  const size_t kb = body_end(s, k0, k1, IB);
  for (int r = 0; r < ROWS; ++r) acc[r] = vdupq_n_s32(0);

  size_t k = k0;
  for (; k + 4 <= kb; k += 4) {
    const int8x16_t w = vld1q_s8(s->values + 4 * k); /* blocks k .. k+3 */
    const size_t d0 = col_at(s->idx, k, IB) * 4, d1 = col_at(s->idx, k + 1, IB) * 4;
    const size_t d2 = col_at(s->idx, k + 2, IB) * 4, d3 = col_at(s->idx, k + 3, IB) * 4;
    for (int r = 0; r < ROWS; ++r) {
      uint32x4_t xv = vdupq_n_u32(ld_u32(x[r] + d0));
      xv = vsetq_lane_u32(ld_u32(x[r] + d1), xv, 1);
      xv = vsetq_lane_u32(ld_u32(x[r] + d2), xv, 2);
      xv = vsetq_lane_u32(ld_u32(x[r] + d3), xv, 3);
      acc[r] = vdotq_s32(acc[r], w, vreinterpretq_s8_u32(xv));
    }
  }
  /* At most 3 body blocks are left, plus maybe the ragged one: one vector
   * with zero lanes to spare. Weights go lane by lane, since a 16-byte load
   * could run past the end of the buffer. */
  if (k < k1) {
    uint32_t wq[4] = {0, 0, 0, 0};
    uint32_t xq[4][4];
    for (int r = 0; r < ROWS; ++r) xq[r][0] = xq[r][1] = xq[r][2] = xq[r][3] = 0;
    size_t j = 0;
    for (; k + j < kb; ++j) {
      wq[j] = ld_u32(s->values + 4 * (k + j));
      const size_t d = col_at(s->idx, k + j, IB) * 4;
      for (int r = 0; r < ROWS; ++r) xq[r][j] = ld_u32(x[r] + d);
    }
    if (kb < k1) {
      wq[j] = ld_u32(s->values + 4 * kb);
      for (int r = 0; r < ROWS; ++r) xq[r][j] = ld_u32(tail[r]);
    }
    const int8x16_t w = vreinterpretq_s8_u32(vld1q_u32(wq));
    for (int r = 0; r < ROWS; ++r)
      acc[r] = vdotq_s32(acc[r], w, vreinterpretq_s8_u32(vld1q_u32(xq[r])));
  }
}

/* BC is 16 or 4. Channels come in groups of 4: each one's partial sums are
 * folded by two pairwise adds into one vector of 4 channel sums, which is
 * requantized like a 4-channel block. */
EDGED_INLINE void tile_1xk(const spmm_plan* s, const int8_t* a, size_t a_stride, int8_t* c,
                           size_t c_stride, const edged_requant* rq, const int BC, const int ROWS,
                           const int IB) {
  const int8_t* x[4];
  int8_t tail[4][16];
  for (int r = 0; r < ROWS; ++r) x[r] = a + (size_t)r * a_stride;
  make_tails(s, x, ROWS, tail);

  for (size_t g = 0; g < s->n; g += 4) {
    const size_t count = s->n - g < 4 ? s->n - g : 4;
    int32x4_t acc[4][4]; /* [channel in group][row] */
    for (size_t q = 0; q < 4; ++q) {
      if (q < count) {
        if (BC == 16)
          chan_1x16(s, g + q, x, tail, acc[q], ROWS, IB);
        else
          chan_1x4(s, g + q, x, tail, acc[q], ROWS, IB);
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

/* Row tiles of 4, then 2, then 1, each a constant for the inlined tile. */
#define EDGED_SPMM_DRIVER(NAME, TILE, P, IB)                                                   \
  static void NAME(const spmm_plan* s, size_t m, const int8_t* a, size_t a_stride, int8_t* c, \
                   size_t c_stride, const edged_requant* rq) {                                \
    size_t r = 0;                                                                              \
    for (; r + 4 <= m; r += 4)                                                                 \
      TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, 4, IB);           \
    if (r + 2 <= m) {                                                                          \
      TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, 2, IB);           \
      r += 2;                                                                                  \
    }                                                                                          \
    if (r < m) TILE(s, a + r * a_stride, a_stride, c + r * c_stride, c_stride, rq, P, 1, IB);  \
  }

EDGED_SPMM_DRIVER(run_4x4_u8, tile_kx4, 1, 1)
EDGED_SPMM_DRIVER(run_4x4_u16, tile_kx4, 1, 2)
EDGED_SPMM_DRIVER(run_8x4_u8, tile_kx4, 2, 1)
EDGED_SPMM_DRIVER(run_8x4_u16, tile_kx4, 2, 2)
EDGED_SPMM_DRIVER(run_16x4_u8, tile_kx4, 4, 1)
EDGED_SPMM_DRIVER(run_16x4_u16, tile_kx4, 4, 2)
EDGED_SPMM_DRIVER(run_1x16_u8, tile_1xk, 16, 1)
EDGED_SPMM_DRIVER(run_1x16_u16, tile_1xk, 16, 2)
EDGED_SPMM_DRIVER(run_1x4_u8, tile_1xk, 4, 1)
EDGED_SPMM_DRIVER(run_1x4_u16, tile_1xk, 4, 2)
#undef EDGED_SPMM_DRIVER

typedef void (*spmm_driver)(const spmm_plan*, size_t, const int8_t*, size_t, int8_t*, size_t,
                            const edged_requant*);

void edged_s8_spmm_neondot(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                           int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  const int br = h->block_rows, bc = h->block_cols, u8 = h->index_bytes == 1;
  spmm_driver run = NULL;
  if (bc == 4 && br == 4) run = u8 ? run_4x4_u8 : run_4x4_u16;
  else if (bc == 4 && br == 8) run = u8 ? run_8x4_u8 : run_8x4_u16;
  else if (bc == 4 && br == 16) run = u8 ? run_16x4_u8 : run_16x4_u16;
  else if (bc == 16 && br == 1) run = u8 ? run_1x16_u8 : run_1x16_u16;
  else if (bc == 4 && br == 1) run = u8 ? run_1x4_u8 : run_1x4_u16;
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

#pragma GCC pop_options
#else
typedef int edged_s8_spmm_neondot_unused;
#endif
