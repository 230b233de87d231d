/* Block-sparse int8 GEMV (batch 1) for x86-64 with AVX-512 VNNI: the
 * activation row is first copied shifted to unsigned (or widened), then the
 * block rows are walked with accumulators in registers:
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
 * requantized sixteen at a time. See s8_spmm_avx512vnni.c for the rest.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <stdlib.h>

#include "spmm_avx512vnni.h"

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

static VNNI_TARGET void gemv_u8(const spmm_geom* g, int shape, const void* x, int8_t* y,
                                const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 1);
}
static VNNI_TARGET void gemv_u16(const spmm_geom* g, int shape, const void* x, int8_t* y,
                                 const edged_requant* rq) {
  gemv(g, shape, x, y, rq, 2);
}

VNNI_TARGET int edged_spmm512_gemv_rows(const spmm_geom* g, int shape, size_t m, const int8_t* a,
                                        size_t a_stride, int8_t* c, size_t c_stride, const edged_requant* rq,
                                        void* buf, size_t buf_bytes) {
  const int u8 = g->ib == 1;
  const int vbmi = shape == SHAPE_1x1 && has_vbmi();
  const int wide = shape == SHAPE_1x1 && !vbmi;
  const size_t bytes = prep_bytes(g->depth, wide);
  void* xp = bytes <= buf_bytes ? buf : malloc(bytes);
  if (xp == NULL) return -1;
  for (size_t r = 0; r < m; ++r) {
    prep_row(a + r * a_stride, g->depth, wide, xp);
    if (vbmi && u8)
      gemv_1x1_vbmi_u8(g, (const uint8_t*)xp, c + r * c_stride, rq);
    else if (vbmi)
      gemv_1x1_vbmi_u16(g, (const uint8_t*)xp, c + r * c_stride, rq);
    else if (u8)
      gemv_u8(g, shape, xp, c + r * c_stride, rq);
    else
      gemv_u16(g, shape, xp, c + r * c_stride, rq);
  }
  if (xp != buf) free(xp);
  return 0;
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_spmm_avx512vnni_gemv_unused;
#endif
