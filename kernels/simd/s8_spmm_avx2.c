/* Block-sparse int8 GEMM for x86-64 with AVX2 (no VNNI).
 *
 * As in the dense AVX2 GEMM, vpmaddubsw is avoided: its int16 pair sums
 * saturate (255*127*2 > 32767) and would break bit-exactness. Weights and
 * activations are sign-extended to int16 (vpmovsxbw) and multiplied with
 * vpmaddwd, whose int32 pair sums cannot overflow; the accumulators start
 * from the plain packed `term` (bias + input_offset*rowsum).
 *
 *   8x4, 16x4  a block's 16-byte group of 4 channels x 4 depth steps,
 *              sign-extended, times the activation quad repeated four times
 *              gives 2 int32 partial sums per channel; at the block-row end
 *              vphaddd folds the pairs and a permute restores channel order;
 *   1x16       the 16 activations of a block against its 16 weights,
 *              8 int32 partial sums reduced at the row end;
 *   1x4        four blocks of a row per step (their 16 weight bytes are
 *              contiguous; the four activation quads are inserted).
 * Rows of one channel (1xN) are reduced eight at a time by a vphaddd tree.
 * Batches run the GEMV row by row (the weights stay in cache); other block
 * shapes, and depths that are not a multiple of the block width, run the
 * reference.
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx2_requant.h"

/* Column index k; ib (1 or 2 bytes) is a constant in every caller. */
AVX2_INLINE size_t col_at(const void* idx, size_t k, const int ib) {
  return ib == 1 ? (size_t)((const uint8_t*)idx)[k] : (size_t)((const uint16_t*)idx)[k];
}

static inline int32_t ld32(const void* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* An activation quad (x[d..d+3]) as int16, repeated in all four 64-bit groups. */
AVX2_INLINE __m256i bcast_quad16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_set1_epi32(ld32(p)));
}

/* 16 weight bytes sign-extended to int16. */
AVX2_INLINE __m256i w16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p));
}

typedef struct {
  size_t n, nbr;
  const int32_t* row_ptr;
  const void* idx;
  const int32_t* term;
  const int8_t* w;
} spmm_geom;

/* acc_a, acc_b: per channel pairs of int32 partial sums for channels 0-3 and
 * 4-7, as vpmaddwd left them; returns the 8 channel sums in order. */
AVX2_INLINE __m256i fold_pairs(__m256i acc_a, __m256i acc_b) {
  /* hadd: lane 0 = [c0 c1 c4 c5], lane 1 = [c2 c3 c6 c7]. */
  const __m256i h = _mm256_hadd_epi32(acc_a, acc_b);
  return _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
}

/* Requantizes and stores 8 channels from o; acc excludes the term. */
AVX2_INLINE void store_8ch(const spmm_geom* g, size_t o, __m256i acc, const edged_requant* rq,
                           int8_t* y) {
  rq8 q;
  rq8_load(&q, rq, o, g->n);
  /* The term array ends at the last block row, which for 1xN shapes may be
   * before o+8: load only the channels that exist. */
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)q.valid), lane);
  const __m256i t = _mm256_maskload_epi32(g->term + o, mask);
  store8(&q, rq8_apply(&q, _mm256_add_epi32(acc, t), rq), y + o);
}

/* 8x4 / 16x4 (nq = br / 4 groups of 4 channels). */
AVX2_INLINE void gemv_x4(const spmm_geom* g, const int8_t* x, int8_t* y, const edged_requant* rq,
                         const int br, const int ib) {
  const int nq = br / 4;
  for (size_t i = 0; i < g->nbr; ++i) {
    __m256i acc[4];
    for (int j = 0; j < nq; ++j) acc[j] = _mm256_setzero_si256();
    const size_t end = (size_t)g->row_ptr[i + 1];
    for (size_t k = (size_t)g->row_ptr[i]; k < end; ++k) {
      const __m256i xv = bcast_quad16(x + 4 * col_at(g->idx, k, ib));
      const int8_t* wb = g->w + k * (size_t)(4 * br);
      for (int j = 0; j < nq; ++j) acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(w16(wb + 16 * j), xv));
    }
    for (int j = 0; j < nq; j += 2) {
      const size_t o = i * (size_t)br + 4 * (size_t)j;
      if (o < g->n) store_8ch(g, o, fold_pairs(acc[j], acc[j + 1]), rq, y);
    }
  }
}

/* The 8 lane sums of each of 8 vectors, in order. */
AVX2_INLINE __m256i hsum8x8(const __m256i v[8]) {
  const __m256i s01 = _mm256_hadd_epi32(v[0], v[1]), s23 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i s45 = _mm256_hadd_epi32(v[4], v[5]), s67 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i t0 = _mm256_hadd_epi32(s01, s23), t1 = _mm256_hadd_epi32(s45, s67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* One row of 1x16 blocks: 8 int32 partial sums. */
AVX2_INLINE __m256i row_1x16(const spmm_geom* g, size_t i, const int8_t* x, const int ib) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  for (; k + 2 <= end; k += 2) {
    const size_t c0 = col_at(g->idx, k, ib), c1 = col_at(g->idx, k + 1, ib);
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(w16(x + 16 * c0), w16(g->w + 16 * k)));
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(w16(x + 16 * c1), w16(g->w + 16 * k + 16)));
  }
  if (k < end)
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(w16(x + 16 * col_at(g->idx, k, ib)), w16(g->w + 16 * k)));
  return _mm256_add_epi32(acc0, acc1);
}

/* One row of 1x4 blocks: four blocks per vpmaddwd, the leftover 1-3 one by
 * one (a 4-byte load each: the weights may end right after them). */
AVX2_INLINE __m256i row_1x4(const spmm_geom* g, size_t i, const int8_t* x, const int ib) {
  __m256i acc = _mm256_setzero_si256();
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  for (; k + 4 <= end; k += 4) {
    const __m128i xq = _mm_setr_epi32(ld32(x + 4 * col_at(g->idx, k, ib)), ld32(x + 4 * col_at(g->idx, k + 1, ib)),
                                      ld32(x + 4 * col_at(g->idx, k + 2, ib)), ld32(x + 4 * col_at(g->idx, k + 3, ib)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(xq), w16(g->w + 4 * k)));
  }
  __m128i acc4 = _mm_setzero_si128();
  for (; k < end; ++k) {
    const __m128i xq = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(ld32(x + 4 * col_at(g->idx, k, ib))));
    const __m128i wq = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(ld32(g->w + 4 * k)));
    acc4 = _mm_add_epi32(acc4, _mm_madd_epi16(xq, wq));
  }
  return _mm256_add_epi32(acc, _mm256_zextsi128_si256(acc4));
}

AVX2_INLINE void gemv_1xn(const spmm_geom* g, const int8_t* x, int8_t* y, const edged_requant* rq,
                          const int bc, const int ib) {
  __m256i part[8];
  for (size_t o = 0; o < g->n; o += 8) {
    for (size_t j = 0; j < 8; ++j)
      part[j] = o + j >= g->n ? _mm256_setzero_si256()
                : bc == 16    ? row_1x16(g, o + j, x, ib)
                              : row_1x4(g, o + j, x, ib);
    store_8ch(g, o, hsum8x8(part), rq, y);
  }
}

enum { SHAPE_NONE, SHAPE_16x4, SHAPE_8x4, SHAPE_1x16, SHAPE_1x4 };

AVX2_INLINE void gemv(const spmm_geom* g, int shape, const int8_t* x, int8_t* y,
                      const edged_requant* rq, const int ib) {
  switch (shape) {
    case SHAPE_16x4: gemv_x4(g, x, y, rq, 16, ib); break;
    case SHAPE_8x4: gemv_x4(g, x, y, rq, 8, ib); break;
    case SHAPE_1x16: gemv_1xn(g, x, y, rq, 16, ib); break;
    default: gemv_1xn(g, x, y, rq, 4, ib); break;
  }
}

static AVX2_TARGET void gemv_u8(const spmm_geom* g, int shape, const int8_t* x, int8_t* y,
                                const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 1);
}
static AVX2_TARGET void gemv_u16(const spmm_geom* g, int shape, const int8_t* x, int8_t* y,
                                 const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 2);
}

void edged_s8_spmm_avx2(size_t m, const int8_t* a, size_t a_stride, const void* packed, int8_t* c,
                        size_t c_stride, const edged_requant* rq) {
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  const int br = h->block_rows, bc = h->block_cols;
  const int shape = bc == 4 && br == 16   ? SHAPE_16x4
                    : bc == 4 && br == 8  ? SHAPE_8x4
                    : bc == 16 && br == 1 ? SHAPE_1x16
                    : bc == 4 && br == 1  ? SHAPE_1x4
                                          : SHAPE_NONE;
  if (shape == SHAPE_NONE || h->depth % bc != 0) {
    edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
    return;
  }
  spmm_geom g;
  g.n = (size_t)h->out_c;
  g.nbr = (size_t)h->n_block_rows;
  g.row_ptr = edged_sparse_row_ptr(h);
  g.idx = edged_sparse_indices(h);
  g.term = edged_sparse_terms(h);
  g.w = edged_sparse_values(h);
  for (size_t r = 0; r < m; ++r) {
    if (h->index_bytes == 1)
      gemv_u8(&g, shape, a + r * a_stride, c + r * c_stride, rq);
    else
      gemv_u16(&g, shape, a + r * a_stride, c + r * c_stride, rq);
  }
}

#else
typedef int edged_s8_spmm_avx2_unused;
#endif
