/* int8 GEMM for x86-64 with AVX-512 VNNI (Ice Lake+, Zen 4+).
 *
 * vpdpbusd multiplies unsigned activations by signed weights, four depth
 * steps per int32 lane. Activations are fed as x ^ 0x80 == x + 128 (as u8);
 * packing already subtracted 128 * rowsum(w) from the per-channel term, so
 * the accumulators come out exactly as TFLite's.
 *
 * Weights are blocks of 16 output channels (one zmm of int32 accumulators);
 * each 64-byte step of a block holds 4 depth values of all 16 channels.
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"
/* gemv_block8 prefetches its weights this far ahead: a layer too large for
 * L2 (a 1024x1024 FULLY_CONNECTED is 1 MiB) streams them from L3 on every
 * call, and the hardware prefetchers alone left it 1.5 us slower there
 * (bench/engines.py, digits_mlp). */
#define GEMV_PREFETCH_BYTES 2048

static inline uint32_t load_u32(const int8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* The last, partial depth quad of a row (depth % 4 != 0), zero-padded so we
 * never read past the row. Assembled byte by byte: a variable-length memcpy
 * becomes a library call, which would spill every live accumulator. */
static inline uint32_t tail_u32(const int8_t* row, size_t full_quads, size_t depth) {
  const uint8_t* p = (const uint8_t*)row + full_quads * 4;
  const size_t left = depth - full_quads * 4; /* 1..3 */
  uint32_t v = p[0];
  if (left > 1) v |= (uint32_t)p[1] << 8;
  if (left > 2) v |= (uint32_t)p[2] << 16;
  return v;
}

/* Broadcast one depth quad of activations, shifted to unsigned. gcc flips
 * the bits in a general register and broadcasts from there, which keeps the
 * xor off the vector ports vpdpbusd needs: measured faster on Zen 5 than a
 * broadcast load followed by a vector xor. */
VNNI_INLINE __m512i bcast_u8(uint32_t quad) {
  return _mm512_xor_si512(_mm512_set1_epi32((int)quad), _mm512_set1_epi8(-128));
}

/* One row times NB blocks (16*NB channels). Two accumulator chains per block
 * (even/odd quads) hide vpdpbusd latency when NB is small. */
VNNI_INLINE void gemv_blocks(const int8_t* x, const int8_t* w, size_t k_pad, size_t depth,
                             const int32_t* term, size_t o, size_t n, const edged_requant* rq,
                             int8_t* y, const int nb) {
  const size_t full = depth / 4;
  const size_t block_bytes = 16 * k_pad;
  __m512i acc0[4], acc1[4];
  for (int b = 0; b < nb; ++b) {
    acc0[b] = _mm512_setzero_si512();
    acc1[b] = _mm512_setzero_si512();
  }
  size_t q = 0;
  for (; q + 2 <= full; q += 2) {
    const __m512i xa = bcast_u8(load_u32(x + 4 * q));
    const __m512i xb = bcast_u8(load_u32(x + 4 * q + 4));
    for (int b = 0; b < nb; ++b) {
      const int8_t* wb = w + (size_t)b * block_bytes + q * 64;
      acc0[b] = edged_dpbusd(acc0[b], xa, _mm512_loadu_si512(wb));
      acc1[b] = edged_dpbusd(acc1[b], xb, _mm512_loadu_si512(wb + 64));
    }
  }
  for (; q < k_pad / 4; ++q) { /* odd quad count and/or the zero-padded tail quad */
    const __m512i xa = bcast_u8(q < full ? load_u32(x + 4 * q) : tail_u32(x, full, depth));
    for (int b = 0; b < nb; ++b)
      acc0[b] = edged_dpbusd(acc0[b], xa,
                                    _mm512_loadu_si512(w + (size_t)b * block_bytes + q * 64));
  }
  for (int b = 0; b < nb; ++b) {
    rq16 p;
    rq16_load(&p, rq, o + 16 * (size_t)b, n);
    __m512i acc = _mm512_add_epi32(_mm512_add_epi32(acc0[b], acc1[b]),
                                   _mm512_loadu_si512(term + o + 16 * (size_t)b));
    rq16_store(&p, acc, rq, y + o + 16 * (size_t)b);
  }
}

/* One row times one block, 8 accumulator chains (8 quads per step): the
 * weights are then one sequential stream, which the hardware prefetchers
 * follow better than four streams a block apart when they come from L3. */
VNNI_INLINE void gemv_block8(const int8_t* x, const int8_t* w, size_t k_pad, size_t depth, const int32_t* term,
                             size_t o, size_t n, const edged_requant* rq, int8_t* y) {
  const size_t full = depth / 4;
  __m512i acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_si512();
  size_t q = 0;
  for (; q + 8 <= full; q += 8)
    for (int j = 0; j < 8; ++j) {
      if (j % 2 == 0) /* one line per 128 bytes: the adjacent-line prefetcher takes its pair */
        _mm_prefetch((const char*)w + (q + j) * 64 + GEMV_PREFETCH_BYTES, _MM_HINT_T0);
      acc[j] = edged_dpbusd(acc[j], bcast_u8(load_u32(x + 4 * (q + j))), _mm512_loadu_si512(w + (q + j) * 64));
    }
  for (; q < k_pad / 4; ++q)
    acc[0] = edged_dpbusd(acc[0], bcast_u8(q < full ? load_u32(x + 4 * q) : tail_u32(x, full, depth)),
                          _mm512_loadu_si512(w + q * 64));
  __m512i sum = _mm512_loadu_si512(term + o);
  for (int j = 0; j < 8; ++j) sum = _mm512_add_epi32(sum, acc[j]);
  rq16 p;
  rq16_load(&p, rq, o, n);
  rq16_store(&p, sum, rq, y + o);
}

/* Row i of a tile: with FULL set every row is real and sits at
 * a + i * stride, which a base per four rows addresses (scaled-index forms;
 * a pointer per row would be reloaded from the stack on every broadcast). */
VNNI_INLINE const int8_t* tile_row(const int8_t* const* x, const int8_t* const* base4, size_t stride, int i,
                                   const int full) {
  if (!full) return x[i];
  const int j = i & 3;
  return base4[i >> 2] + (j == 0 ? 0 : j == 1 ? stride : j == 2 ? 2 * stride : 3 * stride);
}

/* MR rows times NB blocks (MR * NB <= 16 accumulators). Rows past the end of
 * the matrix alias the last real row (computed, never stored): cheaper than
 * a kernel per row count. */
VNNI_INLINE void tile_rows_as(const int8_t* a, size_t a_stride, size_t rows, const int8_t* w,
                              size_t k_pad, size_t depth, const int32_t* term, size_t o,
                              const edged_requant* rq, const rq16* p, int8_t* c, size_t c_stride,
                              const int mr, const int nb, const int full) {
  const int8_t* x[16];
  for (size_t i = 0; i < (size_t)mr; ++i) x[i] = a + (i < rows ? i : rows - 1) * a_stride;
  const int8_t* base4[4] = {a, a + 4 * a_stride, a + 8 * a_stride, a + 12 * a_stride};
  const size_t full_quads = depth / 4;
  const size_t block_bytes = 16 * k_pad;
  __m512i acc[16][2];
  for (int i = 0; i < mr; ++i)
    for (int b = 0; b < nb; ++b) acc[i][b] = _mm512_setzero_si512();
  size_t q = 0;
  for (; q < full_quads; ++q) {
    __m512i wv[2];
    for (int b = 0; b < nb; ++b) wv[b] = _mm512_loadu_si512(w + (size_t)b * block_bytes + q * 64);
    for (int i = 0; i < mr; ++i) {
      const __m512i xv = bcast_u8(load_u32(tile_row(x, base4, a_stride, i, full) + 4 * q));
      for (int b = 0; b < nb; ++b) acc[i][b] = edged_dpbusd(acc[i][b], xv, wv[b]);
    }
  }
  if (q < k_pad / 4) { /* depth % 4 != 0: one zero-padded quad */
    __m512i wv[2];
    for (int b = 0; b < nb; ++b) wv[b] = _mm512_loadu_si512(w + (size_t)b * block_bytes + q * 64);
    for (int i = 0; i < mr; ++i) {
      const __m512i xv = bcast_u8(tail_u32(x[i], full_quads, depth));
      for (int b = 0; b < nb; ++b) acc[i][b] = edged_dpbusd(acc[i][b], xv, wv[b]);
    }
  }
  const size_t stored = rows < (size_t)mr ? rows : (size_t)mr;
  for (int b = 0; b < nb; ++b)
    rq16_store_rows(&p[b], rq, &acc[0][b], 2, stored, _mm512_loadu_si512(term + o + 16 * (size_t)b),
                    c + o + 16 * (size_t)b, c_stride);
}

VNNI_INLINE void tile_rows(const int8_t* a, size_t a_stride, size_t rows, const int8_t* w, size_t k_pad,
                           size_t depth, const int32_t* term, size_t o, const edged_requant* rq,
                           const rq16* p, int8_t* c, size_t c_stride, const int mr, const int nb) {
  if (rows >= (size_t)mr)
    tile_rows_as(a, a_stride, rows, w, k_pad, depth, term, o, rq, p, c, c_stride, mr, nb, 1);
  else
    tile_rows_as(a, a_stride, rows, w, k_pad, depth, term, o, rq, p, c, c_stride, mr, nb, 0);
}

VNNI_TARGET void edged_s8_gemm_avx512vnni(size_t m, const int8_t* a, size_t a_stride,
                                          const void* packed, int8_t* c, size_t c_stride,
                                          const edged_requant* rq) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  const size_t n = (size_t)h->out_c, depth = (size_t)h->depth, k_pad = (size_t)h->k_pad;
  const size_t nblocks = (size_t)h->n_pad / 16;
  const int32_t* term = edged_packed_terms(packed);
  const int8_t* w = edged_packed_weights(packed);
  const size_t block_bytes = 16 * k_pad;

  if (m == 1) {
    /* GEMV: 4 blocks (64 channels, 8 accumulators) per pass over x. */
    size_t b = 0;
    if (depth >= 256) { /* long rows: one block at a time, one weight stream */
      for (; b < nblocks; ++b) gemv_block8(a, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c);
    }
    for (; b + 4 <= nblocks; b += 4)
      gemv_blocks(a, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, 4);
    for (; b < nblocks; ++b)
      gemv_blocks(a, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, 1);
    return;
  }

  /* Channel blocks outer, rows inner: a 32-channel weight panel stays in L1
   * while the activation rows stream past it. */
  size_t b = 0;
  for (; b + 2 <= nblocks; b += 2) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    rq16_load(&p[1], rq, 16 * b + 16, n);
    /* 8 rows (16 accumulators) while they last, then 4: a tile's fixed
     * costs are most of a 1x1 layer with few input channels. */
    size_t r = 0;
    for (; r + 8 <= m; r += 8)
      tile_rows(a + r * a_stride, a_stride, 8, w + b * block_bytes, k_pad, depth, term, 16 * b, rq, p,
                c + r * c_stride, c_stride, 8, 2);
    for (; r < m; r += 4)
      tile_rows(a + r * a_stride, a_stride, m - r < 4 ? m - r : 4, w + b * block_bytes, k_pad,
                depth, term, 16 * b, rq, p, c + r * c_stride, c_stride, 4, 2);
  }
  if (b < nblocks) {
    /* A lone block (16 channels or fewer, as in the first layers): 16 rows
     * while they last, then 8, so 8 or more independent vpdpbusd chains
     * cover its latency. */
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    p[1] = p[0];
    size_t r = 0;
    for (; r + 16 <= m; r += 16)
      tile_rows(a + r * a_stride, a_stride, 16, w + b * block_bytes, k_pad, depth, term, 16 * b, rq, p,
                c + r * c_stride, c_stride, 16, 1);
    for (; r < m; r += 8)
      tile_rows(a + r * a_stride, a_stride, m - r < 8 ? m - r : 8, w + b * block_bytes, k_pad,
                depth, term, 16 * b, rq, p, c + r * c_stride, c_stride, 8, 1);
  }
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_gemm_avx512vnni_unused;
#endif
