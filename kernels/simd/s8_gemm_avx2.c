/* int8 GEMM for x86-64 with AVX2 (no VNNI).
 *
 * vpmaddubsw would be the obvious instruction, but its int16 pair sums
 * saturate (255*127*2 > 32767), which silently breaks bit-exactness. So both
 * operands are sign-extended to int16 and multiplied with vpmaddwd, whose
 * int32 pair sums cannot overflow.
 *
 * Weights are blocks of 16 output channels; each 32-byte step holds one depth
 * pair of all 16 channels: bytes 0..15 for channels 0..7, 16..31 for 8..15.
 * Sign-extending 16 bytes gives [w0d0 w0d1 w1d0 w1d1 ...], and vpmaddwd
 * against a broadcast (x[d], x[d+1]) pair yields one int32 per channel.
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx2_requant.h"

/* (x[d], x[d+1]) sign-extended to int16 in every 32-bit lane: vpbroadcastw of
 * the byte pair then vpmovsxbw, since the pair of bytes repeats. */
AVX2_INLINE __m256i bcast_pair(const int8_t* row, size_t p, size_t depth) {
  uint16_t v;
  if (2 * p + 2 <= depth)
    memcpy(&v, row + 2 * p, 2);
  else /* odd depth: (x[depth-1], 0); no variable-length memcpy (a call) */
    v = (uint8_t)row[2 * p];
  return _mm256_cvtepi8_epi16(_mm_set1_epi16((short)v));
}

AVX2_INLINE __m256i wload(const int8_t* w) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w));
}

/* One row times NB blocks. */
AVX2_INLINE void gemv_blocks(const int8_t* x, const int8_t* w, size_t k_pad, size_t depth,
                             const int32_t* term, size_t o, size_t n, const edged_requant* rq,
                             int8_t* y, const int nb) {
  const size_t block_bytes = 16 * k_pad;
  const size_t pairs = k_pad / 2, full = depth / 2;
  __m256i acc[2][2];
  for (int b = 0; b < nb; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_si256();
  size_t p = 0;
  for (; p < full; ++p) {
    uint16_t v;
    memcpy(&v, x + 2 * p, 2);
    const __m256i xv = _mm256_cvtepi8_epi16(_mm_set1_epi16((short)v));
    for (int b = 0; b < nb; ++b) {
      const int8_t* wb = w + (size_t)b * block_bytes + p * 32;
      acc[b][0] = _mm256_add_epi32(acc[b][0], _mm256_madd_epi16(wload(wb), xv));
      acc[b][1] = _mm256_add_epi32(acc[b][1], _mm256_madd_epi16(wload(wb + 16), xv));
    }
  }
  for (; p < pairs; ++p) {
    const __m256i xv = bcast_pair(x, p, depth);
    for (int b = 0; b < nb; ++b) {
      const int8_t* wb = w + (size_t)b * block_bytes + p * 32;
      acc[b][0] = _mm256_add_epi32(acc[b][0], _mm256_madd_epi16(wload(wb), xv));
      acc[b][1] = _mm256_add_epi32(acc[b][1], _mm256_madd_epi16(wload(wb + 16), xv));
    }
  }
  for (int b = 0; b < nb; ++b) {
    for (int h = 0; h < 2; ++h) {
      const size_t oo = o + 16 * (size_t)b + 8 * (size_t)h;
      rq8 q;
      rq8_load(&q, rq, oo, n);
      const __m256i t = _mm256_loadu_si256((const __m256i*)(term + oo));
      store8(&q, rq8_apply(&q, _mm256_add_epi32(acc[b][h], t), rq), y + oo);
    }
  }
}

/* Four rows times one block; rows past the end alias the last real row. */
AVX2_INLINE void tile_4x16(const int8_t* a, size_t a_stride, size_t rows, const int8_t* w,
                           size_t k_pad, size_t depth, const int32_t* term, size_t o,
                           const edged_requant* rq, const rq8* q, int8_t* c, size_t c_stride) {
  const int8_t* x[4];
  for (size_t i = 0; i < 4; ++i) x[i] = a + (i < rows ? i : rows - 1) * a_stride;
  __m256i acc[4][2];
  for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const size_t full = depth / 2;
  size_t p = 0;
  for (; p < full; ++p) {
    const __m256i w0 = wload(w + p * 32), w1 = wload(w + p * 32 + 16);
    for (int i = 0; i < 4; ++i) {
      uint16_t v;
      memcpy(&v, x[i] + 2 * p, 2);
      const __m256i xv = _mm256_cvtepi8_epi16(_mm_set1_epi16((short)v));
      acc[i][0] = edged_acc_add(acc[i][0], _mm256_madd_epi16(w0, xv));
      acc[i][1] = edged_acc_add(acc[i][1], _mm256_madd_epi16(w1, xv));
    }
  }
  if (p < k_pad / 2) { /* odd depth: last pair is (x[depth-1], 0) */
    const __m256i w0 = wload(w + p * 32), w1 = wload(w + p * 32 + 16);
    for (int i = 0; i < 4; ++i) {
      const __m256i xv = bcast_pair(x[i], p, depth);
      acc[i][0] = edged_acc_add(acc[i][0], _mm256_madd_epi16(w0, xv));
      acc[i][1] = edged_acc_add(acc[i][1], _mm256_madd_epi16(w1, xv));
    }
  }
  const __m256i t0 = _mm256_loadu_si256((const __m256i*)(term + o));
  const __m256i t1 = _mm256_loadu_si256((const __m256i*)(term + o + 8));
  for (size_t i = 0; i < 4 && i < rows; ++i) {
    int8_t* y = c + i * c_stride + o;
    store8(&q[0], rq8_apply(&q[0], _mm256_add_epi32(acc[i][0], t0), rq), y);
    store8(&q[1], rq8_apply(&q[1], _mm256_add_epi32(acc[i][1], t1), rq), y + 8);
  }
}

AVX2_TARGET void edged_s8_gemm_avx2(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                                    int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  const size_t n = (size_t)h->out_c, depth = (size_t)h->depth, k_pad = (size_t)h->k_pad;
  const size_t nblocks = (size_t)h->n_pad / 16;
  const int32_t* term = edged_packed_terms(packed);
  const int8_t* w = edged_packed_weights(packed);
  const size_t block_bytes = 16 * k_pad;

  if (m == 1) {
    size_t b = 0;
    for (; b + 2 <= nblocks; b += 2)
      gemv_blocks(a, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, 2);
    if (b < nblocks) gemv_blocks(a, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, 1);
    return;
  }
  for (size_t b = 0; b < nblocks; ++b) {
    rq8 q[2];
    rq8_load(&q[0], rq, 16 * b, n);
    rq8_load(&q[1], rq, 16 * b + 8, n);
    for (size_t r = 0; r < m; r += 4)
      tile_4x16(a + r * a_stride, a_stride, m - r < 4 ? m - r : 4, w + b * block_bytes, k_pad,
                depth, term, 16 * b, rq, q, c + r * c_stride, c_stride);
  }
}

#else
typedef int edged_s8_gemm_avx2_unused;
#endif
