/* Block-sparse int8 GEMM for x86-64 with AVX-512 VNNI.
 *
 * Like the dense VNNI GEMM, products go through vpdpbusd with activations
 * fed as x ^ 0x80 == x + 128 (as u8) against signed weights, and start from
 * the packed `term_u8` (bias + input_offset*rowsum - 128*rowsum), so the
 * accumulators come out exactly as TFLite's.
 *
 * Batch 1 (GEMV) first copies the activation row shifted to unsigned (or
 * widened), then walks the block rows with accumulators in registers:
 *   16x4  one zmm per block row: lane j = channel j, the 4 bytes = the 4 depth
 *         steps, which is exactly a block's row-major layout; four chains;
 *   8x4, 4x4  the same in ymm / xmm, two or four block rows then share one
 *         zmm requantization;
 *   1x16  four blocks of a row per zmm (the 64 weight bytes are contiguous),
 *         the activations assembled from four 16-byte loads;
 *   1x4   four blocks per xmm, their activation quads inserted (zmm gathers
 *         are slower on Zen 4, vpermd lookups cost per depth spanned);
 *   1x1   64 weights per vpdpbusd with the activation bytes looked up by
 *         vpermi2b where AVX512_VBMI exists; otherwise 32 per vpmaddwd
 *         against the row widened to int16, looked up by vpermw.
 * Rows of one channel each (1xN) are reduced to a scalar at the row end and
 * requantized sixteen at a time.
 *
 * Batches of 8 rows or more transpose tiles of 16 activation rows so that a
 * zmm holds one depth quad of all 16 rows (lane = row). Every weight is then
 * broadcast once per tile (vpdpbusd's m32bcst operand) and multiplies 16
 * rows at once; the 16 channels x 16 rows accumulators are transposed back
 * before requantization. This covers every block width that is a multiple
 * of 4, and 1x1 by shifting the weight byte to its position inside the
 * depth quad. Smaller batches run the GEMV row by row.
 *
 * Shapes without a specialisation, and depths that are not a multiple of
 * the block width, run the reference.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <stdlib.h>

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
} spmm_geom;

static void geom_init(spmm_geom* g, const edged_sparse_header* h) {
  g->n = (size_t)h->out_c;
  g->depth = (size_t)h->depth;
  g->nbr = (size_t)h->n_block_rows;
  g->br = (size_t)h->block_rows;
  g->row_ptr = edged_sparse_row_ptr(h);
  g->idx = edged_sparse_indices(h);
  g->term_u8 = edged_sparse_terms_u8(h);
  g->term = edged_sparse_terms(h);
  g->w = edged_sparse_values(h);
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

/* ------------------------------------------------------------------------ */
/* Batch 1.                                                                  */
/* ------------------------------------------------------------------------ */

/* 16x4: per block, one broadcast activation quad times 64 weight bytes.
 * Four chains (blocks k mod 4) hide vpdpbusd latency. */
VNNI_INLINE void gemv_16x4(const spmm_geom* g, const uint8_t* x, int8_t* y, const edged_requant* rq,
                           const int ib) {
  const int32_t* row_ptr = g->row_ptr;
  const void* idx = g->idx;
  const int8_t* w = g->w;
  for (size_t i = 0; i < g->nbr; ++i) {
    size_t k = (size_t)row_ptr[i];
    const size_t end = (size_t)row_ptr[i + 1];
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i acc2 = _mm512_setzero_si512(), acc3 = _mm512_setzero_si512();
    for (; k + 4 <= end; k += 4) {
      const size_t c0 = col_at(idx, k, ib), c1 = col_at(idx, k + 1, ib);
      const size_t c2 = col_at(idx, k + 2, ib), c3 = col_at(idx, k + 3, ib);
      acc0 = edged_dpbusd(acc0, bcast_x4(x + 4 * c0), _mm512_loadu_si512(w + 64 * k));
      acc1 = edged_dpbusd(acc1, bcast_x4(x + 4 * c1), _mm512_loadu_si512(w + 64 * k + 64));
      acc2 = edged_dpbusd(acc2, bcast_x4(x + 4 * c2), _mm512_loadu_si512(w + 64 * k + 128));
      acc3 = edged_dpbusd(acc3, bcast_x4(x + 4 * c3), _mm512_loadu_si512(w + 64 * k + 192));
    }
    for (; k < end; ++k)
      acc0 = edged_dpbusd(acc0, bcast_x4(x + 4 * col_at(idx, k, ib)),
                                 _mm512_loadu_si512(w + 64 * k));
    const __m512i t = _mm512_loadu_si512(g->term_u8 + 16 * i);
    acc0 = _mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3));
    store16(g, 16 * i, _mm512_add_epi32(acc0, t), rq, y);
  }
}

/* 8x4: one ymm per block row; two block rows fill one zmm for requantizing. */
VNNI_INLINE __m256i row_8x4(const spmm_geom* g, size_t i, const uint8_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  const void* idx = g->idx;
  const int8_t* w = g->w;
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (; k + 2 <= end; k += 2) {
    const size_t c0 = col_at(idx, k, ib), c1 = col_at(idx, k + 1, ib);
    acc0 = _mm256_dpbusd_epi32(acc0, _mm256_set1_epi32((int)ld32(x + 4 * c0)),
                               _mm256_loadu_si256((const __m256i*)(w + 32 * k)));
    acc1 = _mm256_dpbusd_epi32(acc1, _mm256_set1_epi32((int)ld32(x + 4 * c1)),
                               _mm256_loadu_si256((const __m256i*)(w + 32 * k + 32)));
  }
  if (k < end)
    acc0 = _mm256_dpbusd_epi32(acc0, _mm256_set1_epi32((int)ld32(x + 4 * col_at(idx, k, ib))),
                               _mm256_loadu_si256((const __m256i*)(w + 32 * k)));
  return _mm256_add_epi32(acc0, acc1);
}

VNNI_INLINE void gemv_8x4(const spmm_geom* g, const uint8_t* x, int8_t* y, const edged_requant* rq,
                          const int ib) {
  for (size_t i = 0; i < g->nbr; i += 2) {
    __m512i acc = _mm512_castsi256_si512(row_8x4(g, i, x, ib));
    acc = _mm512_inserti64x4(acc, i + 1 < g->nbr ? row_8x4(g, i + 1, x, ib) : _mm256_setzero_si256(), 1);
    store16(g, 8 * i, _mm512_add_epi32(acc, load_terms(g, g->term_u8, 8 * i)), rq, y);
  }
}

/* 4x4: one xmm per block row; four block rows per zmm. */
VNNI_INLINE __m128i row_4x4(const spmm_geom* g, size_t i, const uint8_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  const void* idx = g->idx;
  const int8_t* w = g->w;
  __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128();
  for (; k + 2 <= end; k += 2) {
    const size_t c0 = col_at(idx, k, ib), c1 = col_at(idx, k + 1, ib);
    acc0 = _mm_dpbusd_epi32(acc0, _mm_set1_epi32((int)ld32(x + 4 * c0)),
                            _mm_loadu_si128((const __m128i*)(w + 16 * k)));
    acc1 = _mm_dpbusd_epi32(acc1, _mm_set1_epi32((int)ld32(x + 4 * c1)),
                            _mm_loadu_si128((const __m128i*)(w + 16 * k + 16)));
  }
  if (k < end)
    acc0 = _mm_dpbusd_epi32(acc0, _mm_set1_epi32((int)ld32(x + 4 * col_at(idx, k, ib))),
                            _mm_loadu_si128((const __m128i*)(w + 16 * k)));
  return _mm_add_epi32(acc0, acc1);
}

VNNI_INLINE void gemv_4x4(const spmm_geom* g, const uint8_t* x, int8_t* y, const edged_requant* rq,
                          const int ib) {
  for (size_t i = 0; i < g->nbr; i += 4) {
    __m512i acc = _mm512_castsi128_si512(row_4x4(g, i, x, ib));
    acc = _mm512_inserti32x4(acc, i + 1 < g->nbr ? row_4x4(g, i + 1, x, ib) : _mm_setzero_si128(), 1);
    acc = _mm512_inserti32x4(acc, i + 2 < g->nbr ? row_4x4(g, i + 2, x, ib) : _mm_setzero_si128(), 2);
    acc = _mm512_inserti32x4(acc, i + 3 < g->nbr ? row_4x4(g, i + 3, x, ib) : _mm_setzero_si128(), 3);
    store16(g, 4 * i, _mm512_add_epi32(acc, load_terms(g, g->term_u8, 4 * i)), rq, y);
  }
}

/* 1x16: four blocks (64 contiguous weight bytes) per vpdpbusd, the four
 * activation slices inserted into the 128-bit lanes; 1-3 leftover blocks of
 * a row go through xmm. Reduced to one int32 at the row end. */
VNNI_INLINE int32_t row_1x16(const spmm_geom* g, size_t i, const uint8_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  const void* idx = g->idx;
  const int8_t* w = g->w;
  __m512i acc = _mm512_setzero_si512();
  for (; k + 4 <= end; k += 4) {
    const size_t c0 = col_at(idx, k, ib), c1 = col_at(idx, k + 1, ib);
    const size_t c2 = col_at(idx, k + 2, ib), c3 = col_at(idx, k + 3, ib);
    __m512i xv = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i*)(x + 16 * c0)));
    xv = _mm512_inserti32x4(xv, _mm_loadu_si128((const __m128i*)(x + 16 * c1)), 1);
    xv = _mm512_inserti32x4(xv, _mm_loadu_si128((const __m128i*)(x + 16 * c2)), 2);
    xv = _mm512_inserti32x4(xv, _mm_loadu_si128((const __m128i*)(x + 16 * c3)), 3);
    acc = edged_dpbusd(acc, xv, _mm512_loadu_si512(w + 16 * k));
  }
  __m128i acc4 = _mm_setzero_si128();
  for (; k < end; ++k)
    acc4 = _mm_dpbusd_epi32(acc4, _mm_loadu_si128((const __m128i*)(x + 16 * col_at(idx, k, ib))),
                            _mm_loadu_si128((const __m128i*)(w + 16 * k)));
  return _mm512_reduce_add_epi32(_mm512_add_epi32(acc, _mm512_zextsi128_si512(acc4)));
}

/* Sixteen (1x4) or thirty-two (1x1) column indices of a row from k, widened
 * to the lane size; lanes past the mask read nothing and hold zero. */
VNNI_INLINE __m512i cols32(const void* idx, size_t k, __mmask16 m, const int ib) {
  return ib == 1 ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, (const uint8_t*)idx + k))
                 : _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t*)idx + k));
}
VNNI_INLINE __m512i cols16(const void* idx, size_t k, __mmask32 m, const int ib) {
  return ib == 1 ? _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, (const uint8_t*)idx + k))
                 : _mm512_maskz_loadu_epi16(m, (const uint16_t*)idx + k);
}

/* 1x4: one block per int32 lane, four blocks per xmm vpdpbusd (their 16
 * weight bytes are contiguous), the four activation quads inserted. Cheaper
 * than gathering sixteen quads (slow on Zen 4) or looking them up with
 * vpermd (work proportional to the depth a row spans). */
VNNI_INLINE int32_t row_1x4(const spmm_geom* g, size_t i, const uint8_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  const void* idx = g->idx;
  const int8_t* w = g->w;
  __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128();
  for (; k + 8 <= end; k += 8) {
    const __m128i x0 = _mm_setr_epi32((int)ld32(x + 4 * col_at(idx, k, ib)), (int)ld32(x + 4 * col_at(idx, k + 1, ib)),
                                      (int)ld32(x + 4 * col_at(idx, k + 2, ib)), (int)ld32(x + 4 * col_at(idx, k + 3, ib)));
    const __m128i x1 = _mm_setr_epi32((int)ld32(x + 4 * col_at(idx, k + 4, ib)), (int)ld32(x + 4 * col_at(idx, k + 5, ib)),
                                      (int)ld32(x + 4 * col_at(idx, k + 6, ib)), (int)ld32(x + 4 * col_at(idx, k + 7, ib)));
    acc0 = _mm_dpbusd_epi32(acc0, x0, _mm_loadu_si128((const __m128i*)(w + 4 * k)));
    acc1 = _mm_dpbusd_epi32(acc1, x1, _mm_loadu_si128((const __m128i*)(w + 4 * k + 16)));
  }
  if (k + 4 <= end) {
    const __m128i x0 = _mm_setr_epi32((int)ld32(x + 4 * col_at(idx, k, ib)), (int)ld32(x + 4 * col_at(idx, k + 1, ib)),
                                      (int)ld32(x + 4 * col_at(idx, k + 2, ib)), (int)ld32(x + 4 * col_at(idx, k + 3, ib)));
    acc0 = _mm_dpbusd_epi32(acc0, x0, _mm_loadu_si128((const __m128i*)(w + 4 * k)));
    k += 4;
  }
  /* 1-3 leftover blocks: lane 0 only (4-byte loads: the weights may end here). */
  for (; k < end; ++k)
    acc1 = _mm_dpbusd_epi32(acc1, _mm_cvtsi32_si128((int)ld32(x + 4 * col_at(idx, k, ib))),
                            _mm_cvtsi32_si128((int)ld32(w + 4 * k)));
  acc0 = _mm_add_epi32(acc0, acc1);
  acc0 = _mm_add_epi32(acc0, _mm_unpackhi_epi64(acc0, acc0));
  return (int32_t)((uint32_t)_mm_cvtsi128_si32(acc0) + (uint32_t)_mm_extract_epi32(acc0, 1));
}

/* 1x1 without AVX512_VBMI: thirty-two weights per step, sign-extended to
 * int16 against the row as int16 (plain `term`, no unsigned shift), vpmaddwd
 * into int32 pairs. The activations are looked up with vpermw in 64-byte
 * (32-value) slices of the row: the columns of a row increase, so the 32
 * span the slices of their first to last column, and each slice overwrites
 * the lanes whose column is at or past its start. */
VNNI_INLINE int32_t row_1x1(const spmm_geom* g, size_t i, const int16_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  __m512i acc = _mm512_setzero_si512();
  for (; k < end; k += 32) {
    const size_t cnt = end - k >= 32 ? 32 : end - k;
    const __mmask32 m = (__mmask32)(((uint64_t)1 << cnt) - 1u);
    const __m512i cols = cols16(g->idx, k, m, ib);
    const size_t t_end = (col_at(g->idx, k + cnt - 1, ib) >> 5) + 1;
    size_t t = col_at(g->idx, k, ib) >> 5;
    __m512i xv = _mm512_permutexvar_epi16(cols, _mm512_loadu_si512(x + 32 * t));
    for (++t; t < t_end; ++t)
      xv = _mm512_mask_permutexvar_epi16(xv, _mm512_cmpge_epu16_mask(cols, _mm512_set1_epi16((short)(32 * t))),
                                         cols, _mm512_loadu_si512(x + 32 * t));
    const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, g->w + k));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(xv, wv));
  }
  return _mm512_reduce_add_epi32(acc);
}

/* 1x1 where AVX512_VBMI exists (Ice Lake, Zen 4 and later): sixty-four
 * weights per vpdpbusd, their activation bytes looked up with vpermi2b in
 * 128-byte slices of the (unsigned-shifted) row, so a step costs one
 * permute, compare and blend per 128 depth values the group spans instead
 * of one per 32. */
#define VBMI_INLINE \
  static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
#define VBMI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

VBMI_INLINE int32_t row_1x1_vbmi(const spmm_geom* g, size_t i, const uint8_t* x, const int ib) {
  size_t k = (size_t)g->row_ptr[i];
  const size_t end = (size_t)g->row_ptr[i + 1];
  __m512i acc = _mm512_setzero_si512();
  for (; k < end; k += 64) {
    const size_t cnt = end - k >= 64 ? 64 : end - k;
    const __mmask64 m = cnt == 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1);
    /* Low byte of each column (vpermi2b reads its low 7 bits) and its
     * 128-byte slice number. */
    __m512i lo, slice;
    if (ib == 1) {
      lo = _mm512_maskz_loadu_epi8(m, (const uint8_t*)g->idx + k);
      slice = _mm512_and_si512(_mm512_srli_epi16(lo, 7), _mm512_set1_epi8(1));
    } else {
      const uint16_t* ip = (const uint16_t*)g->idx + k;
      const __m512i c0 = _mm512_maskz_loadu_epi16((__mmask32)m, ip);
      const __m512i c1 = _mm512_maskz_loadu_epi16((__mmask32)(m >> 32), ip + 32);
      lo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(c0)), _mm512_cvtepi16_epi8(c1), 1);
      slice = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(_mm512_srli_epi16(c0, 7))),
                                 _mm512_cvtepi16_epi8(_mm512_srli_epi16(c1, 7)), 1);
    }
    const size_t t_end = (col_at(g->idx, k + cnt - 1, ib) >> 7) + 1;
    size_t t = col_at(g->idx, k, ib) >> 7;
    __m512i xv = _mm512_permutex2var_epi8(_mm512_loadu_si512(x + 128 * t), lo,
                                          _mm512_loadu_si512(x + 128 * t + 64));
    for (++t; t < t_end; ++t) {
      const __m512i v = _mm512_permutex2var_epi8(_mm512_loadu_si512(x + 128 * t), lo,
                                                 _mm512_loadu_si512(x + 128 * t + 64));
      xv = _mm512_mask_mov_epi8(xv, _mm512_cmpge_epu8_mask(slice, _mm512_set1_epi8((char)t)), v);
    }
    acc = edged_dpbusd(acc, xv, _mm512_maskz_loadu_epi8(m, g->w + k));
  }
  return _mm512_reduce_add_epi32(acc);
}

VBMI_INLINE void gemv_1x1_vbmi(const spmm_geom* g, const uint8_t* x, int8_t* y, const edged_requant* rq,
                               const int ib) {
  int32_t sums[16];
  for (size_t o = 0; o < g->n; o += 16) {
    const size_t rows = g->n - o < 16 ? g->n - o : 16;
    for (size_t j = 0; j < rows; ++j) sums[j] = row_1x1_vbmi(g, o + j, x, ib);
    const __mmask16 m = (__mmask16)((1u << rows) - 1u);
    const __m512i acc = _mm512_maskz_loadu_epi32(m, sums);
    store16(g, o, _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(m, g->term_u8 + o)), rq, y);
  }
}

static VBMI_TARGET void gemv_1x1_vbmi_u8(const spmm_geom* g, const uint8_t* x, int8_t* y,
                                         const edged_requant* rq) {
  gemv_1x1_vbmi(g, x, y, rq, 1);
}
static VBMI_TARGET void gemv_1x1_vbmi_u16(const spmm_geom* g, const uint8_t* x, int8_t* y,
                                          const edged_requant* rq) {
  gemv_1x1_vbmi(g, x, y, rq, 2);
}

static int has_vbmi(void) {
  static volatile int cached = -1; /* benign race: every thread computes the same */
  int v = cached;
  if (v < 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx512vbmi") ? 1 : 0;
    cached = v;
  }
  return v;
}

/* Rows of one channel each: sixteen row sums, then one requantization. */
VNNI_INLINE void gemv_1xn(const spmm_geom* g, const void* x, int8_t* y, const edged_requant* rq,
                          const int bc, const int ib) {
  int32_t sums[16];
  const int32_t* term = bc == 1 ? g->term : g->term_u8;
  for (size_t o = 0; o < g->n; o += 16) {
    const size_t rows = g->n - o < 16 ? g->n - o : 16;
    for (size_t j = 0; j < rows; ++j)
      sums[j] = bc == 16 ? row_1x16(g, o + j, (const uint8_t*)x, ib)
                : bc == 4 ? row_1x4(g, o + j, (const uint8_t*)x, ib)
                          : row_1x1(g, o + j, (const int16_t*)x, ib);
    const __mmask16 m = (__mmask16)((1u << rows) - 1u);
    const __m512i acc = _mm512_maskz_loadu_epi32(m, sums);
    store16(g, o, _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(m, term + o)), rq, y);
  }
}

/* The activation row as the GEMV kernels read it: shifted to unsigned bytes
 * (x ^ 0x80) for vpdpbusd, or widened to int16 for the 1x1 kernel; padded
 * to whole 128-byte slices so the table lookups stay inside. */
VNNI_INLINE size_t prep_bytes(size_t depth, int wide) {
  return ((wide ? 2 * depth : depth) + 127) / 128 * 128;
}

VNNI_INLINE void prep_row(const int8_t* x, size_t depth, int wide, void* buf) {
  const size_t len = prep_bytes(depth, wide) >> wide;
  for (size_t d = 0; d < len; d += 32) {
    const size_t left = depth > d ? depth - d : 0;
    const __mmask32 m = left >= 32 ? ~(__mmask32)0 : (__mmask32)(((uint64_t)1 << left) - 1);
    const __m256i v = _mm256_maskz_loadu_epi8(m, x + d);
    if (wide)
      _mm512_storeu_si512((int16_t*)buf + d, _mm512_cvtepi8_epi16(v));
    else
      _mm256_storeu_si256((__m256i*)((uint8_t*)buf + d), _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
  }
}

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
    for (size_t r = 0; r < rows; ++r) rq16_store(&p, _mm512_add_epi32(acc[r], t), rq, c + r * c_stride + o);
  }
}

/* ------------------------------------------------------------------------ */
/* Dispatch.                                                                 */
/* ------------------------------------------------------------------------ */

enum { SHAPE_NONE, SHAPE_16x4, SHAPE_8x4, SHAPE_4x4, SHAPE_1x16, SHAPE_1x4, SHAPE_1x1 };

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

/* x: the row prepared by prep_row. */
VNNI_INLINE void gemv(const spmm_geom* g, int shape, const void* x, int8_t* y,
                      const edged_requant* rq, const int ib) {
  switch (shape) {
    case SHAPE_16x4: gemv_16x4(g, (const uint8_t*)x, y, rq, ib); break;
    case SHAPE_8x4: gemv_8x4(g, (const uint8_t*)x, y, rq, ib); break;
    case SHAPE_4x4: gemv_4x4(g, (const uint8_t*)x, y, rq, ib); break;
    case SHAPE_1x16: gemv_1xn(g, x, y, rq, 16, ib); break;
    case SHAPE_1x4: gemv_1xn(g, x, y, rq, 4, ib); break;
    default: gemv_1xn(g, x, y, rq, 1, ib); break;
  }
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

static VNNI_TARGET void gemv_u8(const spmm_geom* g, int shape, const void* x, int8_t* y,
                                const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 1);
}
static VNNI_TARGET void gemv_u16(const spmm_geom* g, int shape, const void* x, int8_t* y,
                                 const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 2);
}
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
  const int u8 = h->index_bytes == 1;

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

  const int vbmi = shape == SHAPE_1x1 && has_vbmi();
  const int wide = shape == SHAPE_1x1 && !vbmi;
  const size_t bytes = prep_bytes(g.depth, wide);
  void* xp = bytes <= XT_STACK_BYTES ? (void*)stack_buf : malloc(bytes);
  if (xp == NULL) {
    edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
    return;
  }
  for (size_t r = 0; r < m; ++r) {
    prep_row(a + r * a_stride, g.depth, wide, xp);
    if (vbmi && u8)
      gemv_1x1_vbmi_u8(&g, (const uint8_t*)xp, c + r * c_stride, rq);
    else if (vbmi)
      gemv_1x1_vbmi_u16(&g, (const uint8_t*)xp, c + r * c_stride, rq);
    else if (u8)
      gemv_u8(&g, shape, xp, c + r * c_stride, rq);
    else
      gemv_u16(&g, shape, xp, c + r * c_stride, rq);
  }
  if (xp != (void*)stack_buf) free(xp);
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_spmm_avx512vnni_unused;
#endif
