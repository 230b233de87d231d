/* Pieces shared by the two AArch64 block-sparse GEMMs (s8_spmm_neon.c and
 * s8_spmm_neondot.c): the view of the packed buffer a tile works from, index
 * reads, the ragged last block column, and the narrowing store. Include only
 * inside `#if defined(__aarch64__)`, after neon_requant.h (and, for the
 * dot-product file, inside its target pragma so these inline there too). */
#ifndef EDGED_NEON_SPMM_H
#define EDGED_NEON_SPMM_H

#include "neon_requant.h"

/* What every tile needs from the packed buffer. */
typedef struct {
  const int32_t* row_ptr;
  const void* idx;
  const int32_t* term;
  const int8_t* values;
  size_t n;          /* out_c */
  size_t n_brows;    /* block rows */
  size_t bc;         /* block_cols (<= 16 for every shape here) */
  size_t ragged_col; /* the block column cut by the end of depth, or SIZE_MAX */
  size_t ragged_len; /* depth steps of that column inside depth */
} spmm_plan;

/* Column index k; IB (1 or 2 bytes) is a constant in every caller. */
EDGED_INLINE size_t col_at(const void* idx, size_t k, const int IB) {
  return IB == 1 ? (size_t)((const uint8_t*)idx)[k] : (size_t)((const uint16_t*)idx)[k];
}

/* Blocks [k0, end) of a block row are fed straight from the activations;
 * end is k1 - 1 when the row's last block is the ragged column. */
EDGED_INLINE size_t body_end(const spmm_plan* s, size_t k0, size_t k1, const int IB) {
  return k1 > k0 && col_at(s->idx, k1 - 1, IB) == s->ragged_col ? k1 - 1 : k1;
}

/* Zero-padded copy of each tile row's part of the ragged column, made once
 * per tile before any accumulator is live (memcpy may be a call). */
EDGED_INLINE void make_tails(const spmm_plan* s, const int8_t* const* x, const int ROWS,
                             int8_t tail[][16]) {
  for (int r = 0; r < ROWS; ++r) {
    memset(tail[r], 0, 16);
    if (s->ragged_len) memcpy(tail[r], x[r] + s->ragged_col * s->bc, s->ragged_len);
  }
}

/* Narrows 4*NV clamped lanes and stores `count` (<= 4*NV) bytes. */
EDGED_INLINE void store_s8(const int32x4_t* v, int8_t* dst, size_t count, const int NV) {
  if (NV == 4) {
    edged_store_s8x16(v, dst, count);
    return;
  }
  const int16x4_t hi = NV == 2 ? vqmovn_s32(v[1]) : vdup_n_s16(0);
  const int8x8_t b = vqmovn_s16(vcombine_s16(vqmovn_s32(v[0]), hi));
  if (count >= (size_t)(4 * NV)) {
    if (NV == 2) {
      vst1_s8(dst, b);
    } else {
      const uint32_t u = vget_lane_u32(vreinterpret_u32_s8(b), 0);
      memcpy(dst, &u, 4);
    }
  } else {
    int8_t tmp[8];
    vst1_s8(tmp, b);
    for (size_t j = 0; j < count; ++j) dst[j] = tmp[j];
  }
}

#endif /* EDGED_NEON_SPMM_H */
