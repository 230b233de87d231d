/* Shared by the block-sparse AVX-512 VNNI kernels: the batch-1 GEMV
 * (s8_spmm_avx512vnni_gemv.c) and the transposed-tile kernels with the
 * dispatch (s8_spmm_avx512vnni.c). Include only inside
 * `#if defined(__x86_64__)`. */
#ifndef EDGED_SPMM_AVX512VNNI_H
#define EDGED_SPMM_AVX512VNNI_H

#include "avx512_requant.h"

/* Column index k of a block-CSR buffer; ib (1 or 2 bytes) is a constant in
 * every caller, so each kernel is compiled once per index width. */
VNNI_INLINE size_t col_at(const void* idx, size_t k, const int ib) {
  return ib == 1 ? (size_t)((const uint8_t*)idx)[k] : (size_t)((const uint16_t*)idx)[k];
}

static inline uint32_t ld32(const void* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Four bytes of an activation row already shifted to unsigned (see
 * flip_row), broadcast to every lane. */
VNNI_INLINE __m512i bcast_x4(const uint8_t* p) { return _mm512_set1_epi32((int)ld32(p)); }

/* The geometry every kernel reads from the header. */
typedef struct {
  size_t n, depth, nbr, br;
  const int32_t* row_ptr;
  const void* idx;
  const int32_t* term_u8;
  const int32_t* term;
  const int8_t* w;
  int ib; /* bytes per column index: 1 or 2 */
} spmm_geom;

static inline void geom_init(spmm_geom* g, const edged_sparse_header* h) {
  g->n = (size_t)h->out_c;
  g->depth = (size_t)h->depth;
  g->nbr = (size_t)h->n_block_rows;
  g->br = (size_t)h->block_rows;
  g->row_ptr = edged_sparse_row_ptr(h);
  g->idx = edged_sparse_indices(h);
  g->term_u8 = edged_sparse_terms_u8(h);
  g->term = edged_sparse_terms(h);
  g->w = edged_sparse_values(h);
  g->ib = h->index_bytes == 1 ? 1 : 2;
}

/* Requantizes 16 channels from o (fewer at the end) and stores them. `acc`
 * already includes the term. */
VNNI_INLINE void store16(const spmm_geom* g, size_t o, __m512i acc, const edged_requant* rq,
                         int8_t* y) {
  rq16 p;
  rq16_load(&p, rq, o, g->n);
  rq16_store(&p, acc, rq, y + o);
}

/* The 16 terms from channel o; the term arrays have n_block_rows * br
 * entries, which may end inside these 16. */
VNNI_INLINE __m512i load_terms(const spmm_geom* g, const int32_t* t, size_t o) {
  const size_t avail = g->nbr * g->br - o;
  const __mmask16 m = avail >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << avail) - 1u);
  return _mm512_maskz_loadu_epi32(m, t + o);
}


enum { SHAPE_NONE, SHAPE_16x4, SHAPE_8x4, SHAPE_4x4, SHAPE_1x16, SHAPE_1x4, SHAPE_1x1 };

/* Rows [0, m) of the product, one GEMV per row (batches too small for the
 * transposed tiles). `buf` (buf_bytes, 64-aligned) holds the prepared row
 * when it fits, else the heap does; returns -1 (nothing written) when the
 * heap cannot. */
int edged_spmm512_gemv_rows(const spmm_geom* g, int shape, size_t m, const int8_t* a, size_t a_stride,
                            int8_t* c, size_t c_stride, const edged_requant* rq, void* buf,
                            size_t buf_bytes);

#endif /* EDGED_SPMM_AVX512VNNI_H */
