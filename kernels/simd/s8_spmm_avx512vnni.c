/* Block-sparse int8 GEMM for x86-64 with AVX-512 VNNI.
 *
 * Like the dense VNNI GEMM, products go through vpdpbusd with activations
 * fed as x ^ 0x80 == x + 128 (as u8) against signed weights, and start from
 * the packed `term_u8` (bias + input_offset*rowsum - 128*rowsum), so the
 * accumulators come out exactly as TFLite's.
 *
 * Batches of 8 rows or more transpose tiles of 16 activation rows so that a
 * zmm holds one depth quad of all 16 rows (lane = row). Every weight is then
 * broadcast once per tile (vpdpbusd's m32bcst operand) and multiplies 16
 * rows at once; the 16 channels x 16 rows accumulators are transposed back
 * before requantization. This covers every block width that is a multiple
 * of 4, and 1x1 by shifting the weight byte to its position inside the
 * depth quad. Smaller batches run the GEMV row by row
 * (s8_spmm_avx512vnni_gemv.c).
 *
 * Shapes without a specialisation, and depths that are not a multiple of
 * the block width, run the reference.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <stdlib.h>

#include "spmm_avx512vnni.h"

/* ------------------------------------------------------------------------ */
/* Batch > 1: 16 activation rows per tile, transposed.                      */
/* ------------------------------------------------------------------------ */

/* In-register transpose of a 16x16 int32 matrix (v[i] = row i). */
VNNI_INLINE void transpose16(__m512i v[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  /* v[4a+b] now holds, in 128-bit lane L, elements 4L..4L+3... of column b
   * of rows 4a..4a+3: combine the 128-bit lanes across the four groups. */
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(v[i], v[i + 4], 0x88);      /* lanes 0,2 | 0,2 */
    t[i + 4] = _mm512_shuffle_i32x4(v[i], v[i + 4], 0xDD);  /* lanes 1,3 | 1,3 */
    t[i + 8] = _mm512_shuffle_i32x4(v[i + 8], v[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(v[i + 8], v[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    v[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    v[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    v[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

/* xt[q][r] (one 64-byte vector per depth quad q, a dword per row r) =
 * rows r0 .. r0+rows-1 of `a`, depth quad q, xor 0x80. Quads past the depth
 * (up to nq16, a multiple of 16) and rows past `rows` hold junk that only
 * ever meets zero weights or is never stored. */
VNNI_INLINE void transpose_tile(const int8_t* a, size_t a_stride, size_t rows, size_t depth,
                                size_t nq16, uint8_t* xt) {
  const __m512i flip = _mm512_set1_epi8(-128);
  for (size_t q0 = 0; q0 < nq16; q0 += 16) {
    const size_t d0 = 4 * q0;
    const size_t left = depth > d0 ? depth - d0 : 0;
    const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
    __m512i v[16];
    for (size_t r = 0; r < 16; ++r)
      v[r] = r < rows ? _mm512_maskz_loadu_epi8(m, a + r * a_stride + d0) : _mm512_setzero_si512();
    transpose16(v);
    for (size_t q = 0; q < 16; ++q) _mm512_storeu_si512(xt + (q0 + q) * 64, _mm512_xor_si512(v[q], flip));
  }
}

/* Block k of a tile: its products go to chains loc[j * Q * NB + b * Q + u]
 * (channel j, unroll slot b, depth quad u of the block). */
VNNI_INLINE void tile_block(const spmm_geom* g, const uint8_t* xt, size_t k, __m512i* loc, int b,
                            const int BR, const int BC, const int NB, const int ib) {
  const int Q = BC == 1 ? 1 : BC / 4;
  const size_t col = col_at(g->idx, k, ib);
  const int8_t* wb = g->w + k * (size_t)(BR * BC);
  if (BC == 1) {
    /* The weight byte moved to its place in the depth quad; the other three
     * bytes multiply neighbouring activations by zero. */
    const uint32_t wq = (uint32_t)(uint8_t)wb[0] << (8 * (col & 3));
    loc[b] = edged_dpbusd(loc[b], _mm512_loadu_si512(xt + (col >> 2) * 64), _mm512_set1_epi32((int)wq));
    return;
  }
  for (int u = 0; u < Q; ++u) {
    const __m512i xv = _mm512_loadu_si512(xt + (col * (size_t)Q + (size_t)u) * 64);
    for (int j = 0; j < BR; ++j) {
      __m512i* a = &loc[j * Q * NB + b * Q + u];
      *a = edged_dpbusd(*a, xv, _mm512_set1_epi32((int)ld32(wb + j * BC + 4 * u)));
    }
  }
}

/* One tile: for each group of 16 channels (16 / BR block rows), acc[j] holds
 * channel j for the 16 rows; transposed back, it is 16 output rows. Narrow
 * block rows get several chains per channel (blocks unrolled NB times, and
 * the quads of a wide block), so vpdpbusd latency does not serialise them. */
VNNI_INLINE void tile_t(const spmm_geom* g, const uint8_t* xt, size_t rows, int8_t* c,
                        size_t c_stride, const edged_requant* rq, const int BR, const int BC,
                        const int ib) {
  const int G = 16 / BR;
  const int Q = BC == 1 ? 1 : BC / 4;
  const int NB = BR >= 8 || Q >= 4 ? 1 : (BR == 4 ? 2 : 4 / Q);
  const int NL = BR * NB * Q; /* chains per block row: at most 16 */
  for (size_t i0 = 0; i0 < g->nbr; i0 += (size_t)G) {
    __m512i acc[16];
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_si512();
    for (int s = 0; s < G && i0 + (size_t)s < g->nbr; ++s) {
      const size_t i = i0 + (size_t)s;
      const size_t end = (size_t)g->row_ptr[i + 1];
      __m512i loc[16];
      for (int l = 0; l < NL; ++l) loc[l] = _mm512_setzero_si512();
      size_t k = (size_t)g->row_ptr[i];
      for (; k + (size_t)NB <= end; k += (size_t)NB)
        for (int b = 0; b < NB; ++b) tile_block(g, xt, k + (size_t)b, loc, b, BR, BC, NB, ib);
      for (; k < end; ++k) tile_block(g, xt, k, loc, 0, BR, BC, NB, ib);
      for (int j = 0; j < BR; ++j) {
        __m512i sum = loc[j * NB * Q];
        for (int l = 1; l < NB * Q; ++l) sum = _mm512_add_epi32(sum, loc[j * NB * Q + l]);
        acc[s * BR + j] = sum;
      }
    }
    transpose16(acc);
    const size_t o = i0 * (size_t)BR;
    rq16 p;
    rq16_load(&p, rq, o, g->n);
    const __m512i t = load_terms(g, g->term_u8, o);
    rq16_store_rows(&p, rq, acc, 1, rows, t, c + o, c_stride);
  }
}


/* ------------------------------------------------------------------------ */
/* Dispatch.                                                                 */
/* ------------------------------------------------------------------------ */

static int shape_of(const edged_sparse_header* h) {
  const int br = h->block_rows, bc = h->block_cols;
  if (bc == 4 && br == 16) return SHAPE_16x4;
  if (bc == 4 && br == 8) return SHAPE_8x4;
  if (bc == 4 && br == 4) return SHAPE_4x4;
  if (bc == 16 && br == 1) return SHAPE_1x16;
  if (bc == 4 && br == 1) return SHAPE_1x4;
  if (bc == 1 && br == 1) return SHAPE_1x1;
  return SHAPE_NONE;
}

VNNI_INLINE void tile(const spmm_geom* g, int shape, const uint8_t* xt, size_t rows, int8_t* c,
                      size_t c_stride, const edged_requant* rq, const int ib) {
  switch (shape) {
    case SHAPE_16x4: tile_t(g, xt, rows, c, c_stride, rq, 16, 4, ib); break;
    case SHAPE_8x4: tile_t(g, xt, rows, c, c_stride, rq, 8, 4, ib); break;
    case SHAPE_4x4: tile_t(g, xt, rows, c, c_stride, rq, 4, 4, ib); break;
    case SHAPE_1x16: tile_t(g, xt, rows, c, c_stride, rq, 1, 16, ib); break;
    case SHAPE_1x4: tile_t(g, xt, rows, c, c_stride, rq, 1, 4, ib); break;
    default: tile_t(g, xt, rows, c, c_stride, rq, 1, 1, ib); break;
  }
}

/* Batches from this size on use transposed 16-row tiles; smaller ones run
 * the GEMV per row (a partly filled tile wastes its empty lanes). */
#define TILE_MIN_ROWS 8
/* Transposed tiles up to this size live on the stack, larger ones on the heap. */
#define XT_STACK_BYTES 16384

static VNNI_TARGET void tile_u8(const spmm_geom* g, int shape, const uint8_t* xt, size_t rows,
                                int8_t* c, size_t c_stride, const edged_requant* rq) {
  tile(g, shape, xt, rows, c, c_stride, rq, 1);
}
static VNNI_TARGET void tile_u16(const spmm_geom* g, int shape, const uint8_t* xt, size_t rows,
                                 int8_t* c, size_t c_stride, const edged_requant* rq) {
  tile(g, shape, xt, rows, c, c_stride, rq, 2);
}

VNNI_TARGET void edged_s8_spmm_avx512vnni(size_t m, const int8_t* a, size_t a_stride,
                                          const void* packed, int8_t* c, size_t c_stride,
                                          const edged_requant* rq) {
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  const int shape = shape_of(h);
  if (shape == SHAPE_NONE || (size_t)h->depth % (size_t)h->block_cols != 0) {
    edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
    return;
  }
  spmm_geom g;
  geom_init(&g, h);
  const int u8 = g.ib == 1;

  uint8_t stack_buf[XT_STACK_BYTES] __attribute__((aligned(64)));
  if (m >= TILE_MIN_ROWS) {
    /* Depth quads, rounded up to whole 16x16 transposes. */
    const size_t nq16 = ((g.depth + 3) / 4 + 15) / 16 * 16;
    const size_t bytes = nq16 * 64;
    uint8_t* xt = bytes <= XT_STACK_BYTES ? stack_buf : (uint8_t*)malloc(bytes);
    if (xt == NULL) {
      edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
      return;
    }
    for (size_t r = 0; r < m; r += 16) {
      const size_t rows = m - r < 16 ? m - r : 16;
      transpose_tile(a + r * a_stride, a_stride, rows, g.depth, nq16, xt);
      if (u8)
        tile_u8(&g, shape, xt, rows, c + r * c_stride, c_stride, rq);
      else
        tile_u16(&g, shape, xt, rows, c + r * c_stride, c_stride, rq);
    }
    if (xt != stack_buf) free(xt);
    return;
  }

  if (edged_spmm512_gemv_rows(&g, shape, m, a, a_stride, c, c_stride, rq, stack_buf, sizeof stack_buf) != 0)
    edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_spmm_avx512vnni_unused;
#endif