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
#include <immintrin.h>

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define VNNI_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* Per-block requantization constants, loaded once per 16 channels.
 *
 * Fast path: both roundings of MultiplyByQuantizedMultiplier fold into one
 * 64-bit shift. With p = (x << left) * m and right shift e = -shift >= 0:
 *   SRDHM      q = floor((p + 2^30) / 2^31)
 *   RHU        floor((q + 2^(e-1)) / 2^e) = floor((p + 2^30 + 2^(30+e)) / 2^(31+e))
 *   RHAZ       the same minus 2^31 in the numerator when q < 0, i.e. p < -2^30
 * (nested floor divisions by powers of two compose; the e = 0 terms vanish).
 * The 64-bit numerator cannot overflow and vpsravq divides it exactly. The one case the identity does not
 * cover, SRDHM's saturation at INT32_MIN * INT32_MIN, can only occur with a
 * multiplier of INT32_MIN (never produced by TFLite); blocks that contain
 * one take the step-by-step path instead. */
typedef struct {
  __m512i mult, mult_odd, left;          /* both paths */
  __m512i add_even, add_odd, sh_even, sh_odd, adj_even, adj_odd; /* fast path */
  __m512i right, rmask, rthresh;         /* step-by-step path */
  __mmask16 store_mask;
  int fast, has_left;
} rq16;

VNNI_INLINE void rq16_load(rq16* p, const edged_requant* rq, size_t o, size_t n) {
  const size_t valid = n - o < 16 ? n - o : 16;
  const __mmask16 m = (__mmask16)((1u << valid) - 1u);
  /* Masked loads: the multiplier arrays end at out_c, not at the padding. */
  const __m512i shift = _mm512_maskz_loadu_epi32(m, rq->shift + o);
  const __m512i zero = _mm512_setzero_si512();
  p->mult = _mm512_maskz_loadu_epi32(m, rq->multiplier + o);
  p->mult_odd = _mm512_srli_epi64(p->mult, 32);
  p->left = _mm512_max_epi32(shift, zero);
  p->right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  p->rmask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), p->right), _mm512_set1_epi32(1));
  p->rthresh = _mm512_srli_epi32(p->rmask, 1);
  p->store_mask = m;
  p->has_left = _mm512_cmpgt_epi32_mask(p->left, zero) != 0;
  p->fast = _mm512_cmpeq_epi32_mask(p->mult, _mm512_set1_epi32(INT32_MIN)) == 0;

  /* Per-lane 64-bit constants for the even and odd int32 lanes. */
  const __m512i e_even = _mm512_and_si512(p->right, _mm512_set1_epi64(0xFFFFFFFF));
  const __m512i e_odd = _mm512_srli_epi64(p->right, 32);
  const __m512i half = _mm512_set1_epi64(INT64_C(1) << 30);
  const __m512i one64 = _mm512_set1_epi64(1);
  const __m512i adj = _mm512_set1_epi64(rq->rhaz ? (INT64_C(1) << 31) : 0);
  const __mmask8 pos_even = _mm512_cmpgt_epi64_mask(e_even, zero);
  const __mmask8 pos_odd = _mm512_cmpgt_epi64_mask(e_odd, zero);
  p->add_even = _mm512_mask_add_epi64(half, pos_even, half,
                                      _mm512_sllv_epi64(one64, _mm512_add_epi64(e_even, _mm512_set1_epi64(30))));
  p->add_odd = _mm512_mask_add_epi64(half, pos_odd, half,
                                     _mm512_sllv_epi64(one64, _mm512_add_epi64(e_odd, _mm512_set1_epi64(30))));
  p->sh_even = _mm512_add_epi64(e_even, _mm512_set1_epi64(31));
  p->sh_odd = _mm512_add_epi64(e_odd, _mm512_set1_epi64(31));
  p->adj_even = _mm512_maskz_mov_epi64(pos_even, adj);
  p->adj_odd = _mm512_maskz_mov_epi64(pos_odd, adj);
}

/* Step-by-step MultiplyByQuantizedMultiplier (SRDHM with saturation, then
 * the rounding shift), for blocks the fast identity does not cover. */
VNNI_INLINE __m512i rq16_scale_steps(const rq16* p, __m512i x, const edged_requant* rq) {
  /* SRDHM = floor((x*m + 2^30) / 2^31): bits 31..62 of each 64-bit sum. */
  const __m512i round = _mm512_set1_epi64(INT64_C(1) << 30);
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, p->mult), round);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), p->mult_odd), round);
  even = _mm512_srli_epi64(even, 31);
  odd = _mm512_slli_epi64(odd, 1);
  __m512i r = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
  const __m512i int_min = _mm512_set1_epi32(INT32_MIN);
  const __mmask16 sat = _mm512_cmpeq_epi32_mask(x, int_min) & _mm512_cmpeq_epi32_mask(p->mult, int_min);
  /* The INT32_MIN^2 lane came out as INT32_MIN; flipping all bits gives INT32_MAX. */
  r = _mm512_mask_xor_epi32(r, sat, r, _mm512_set1_epi32(-1));
  /* Rounding right shift: +1 where the remainder exceeds half; RHAZ also
   * keeps an exact half of a negative value down. */
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i rem = _mm512_and_si512(r, p->rmask);
  const __mmask16 neg = rq->rhaz ? _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512()) : 0;
  const __m512i thresh = _mm512_mask_add_epi32(p->rthresh, neg, p->rthresh, one);
  const __m512i v = _mm512_srav_epi32(r, p->right);
  return _mm512_mask_add_epi32(v, _mm512_cmpgt_epi32_mask(rem, thresh), v, one);
}

/* MultiplyByQuantizedMultiplier on 16 lanes, bit-exact with edged_mbqm() /
 * edged_mbqm_rhu(), then + output offset, clamp, narrow, masked store. */
VNNI_INLINE void rq16_store(const rq16* p, __m512i acc, const edged_requant* rq, int8_t* dst) {
  const __m512i x = p->has_left ? _mm512_sllv_epi32(acc, p->left) : acc;
  __m512i v;
  if (p->fast) {
    __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, p->mult), p->add_even);
    __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), p->mult_odd), p->add_odd);
    if (rq->rhaz) {
      const __m512i lim = _mm512_set1_epi64(-(INT64_C(1) << 30));
      even = _mm512_mask_sub_epi64(even, _mm512_cmplt_epi64_mask(even, _mm512_add_epi64(lim, p->add_even)),
                                   even, p->adj_even);
      odd = _mm512_mask_sub_epi64(odd, _mm512_cmplt_epi64_mask(odd, _mm512_add_epi64(lim, p->add_odd)),
                                  odd, p->adj_odd);
    }
    even = _mm512_srav_epi64(even, p->sh_even);
    odd = _mm512_srav_epi64(odd, p->sh_odd);
    /* Low dword of each quotient, interleaved back into lane order. */
    const __m512i idx = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    v = _mm512_permutex2var_epi32(even, idx, odd);
  } else {
    v = rq16_scale_steps(p, x, rq);
  }
  v = _mm512_add_epi32(v, _mm512_set1_epi32(rq->output_offset));
  v = _mm512_max_epi32(v, _mm512_set1_epi32(rq->act_min));
  v = _mm512_min_epi32(v, _mm512_set1_epi32(rq->act_max));
  _mm_mask_storeu_epi8(dst, p->store_mask, _mm512_cvtepi32_epi8(v));
}

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

/* Broadcast one depth quad of activations, shifted to unsigned. */
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
      acc0[b] = _mm512_dpbusd_epi32(acc0[b], xa, _mm512_loadu_si512(wb));
      acc1[b] = _mm512_dpbusd_epi32(acc1[b], xb, _mm512_loadu_si512(wb + 64));
    }
  }
  for (; q < k_pad / 4; ++q) { /* odd quad count and/or the zero-padded tail quad */
    const __m512i xa = bcast_u8(q < full ? load_u32(x + 4 * q) : tail_u32(x, full, depth));
    for (int b = 0; b < nb; ++b)
      acc0[b] = _mm512_dpbusd_epi32(acc0[b], xa,
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

/* Four rows times NB blocks. Rows past the end of the matrix alias the last
 * real row (computed, never stored): cheaper than a kernel per row count. */
VNNI_INLINE void tile_4rows(const int8_t* a, size_t a_stride, size_t rows, const int8_t* w,
                            size_t k_pad, size_t depth, const int32_t* term, size_t o,
                            const edged_requant* rq, const rq16* p, int8_t* c, size_t c_stride,
                            const int nb) {
  const int8_t* x[4];
  for (size_t i = 0; i < 4; ++i) x[i] = a + (i < rows ? i : rows - 1) * a_stride;
  const size_t full = depth / 4;
  const size_t block_bytes = 16 * k_pad;
  __m512i acc[4][2];
  for (int i = 0; i < 4; ++i)
    for (int b = 0; b < nb; ++b) acc[i][b] = _mm512_setzero_si512();
  size_t q = 0;
  for (; q < full; ++q) {
    __m512i wv[2];
    for (int b = 0; b < nb; ++b) wv[b] = _mm512_loadu_si512(w + (size_t)b * block_bytes + q * 64);
    for (int i = 0; i < 4; ++i) {
      const __m512i xv = bcast_u8(load_u32(x[i] + 4 * q));
      for (int b = 0; b < nb; ++b) acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], xv, wv[b]);
    }
  }
  if (q < k_pad / 4) { /* depth % 4 != 0: one zero-padded quad */
    __m512i wv[2];
    for (int b = 0; b < nb; ++b) wv[b] = _mm512_loadu_si512(w + (size_t)b * block_bytes + q * 64);
    for (int i = 0; i < 4; ++i) {
      const __m512i xv = bcast_u8(tail_u32(x[i], full, depth));
      for (int b = 0; b < nb; ++b) acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], xv, wv[b]);
    }
  }
  for (int b = 0; b < nb; ++b) {
    const __m512i t = _mm512_loadu_si512(term + o + 16 * (size_t)b);
    for (size_t i = 0; i < 4 && i < rows; ++i)
      rq16_store(&p[b], _mm512_add_epi32(acc[i][b], t), rq, c + i * c_stride + o + 16 * (size_t)b);
  }
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
    for (size_t r = 0; r < m; r += 4)
      tile_4rows(a + r * a_stride, a_stride, m - r < 4 ? m - r : 4, w + b * block_bytes, k_pad,
                 depth, term, 16 * b, rq, p, c + r * c_stride, c_stride, 2);
  }
  if (b < nblocks) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    p[1] = p[0];
    for (size_t r = 0; r < m; r += 4)
      tile_4rows(a + r * a_stride, a_stride, m - r < 4 ? m - r : 4, w + b * block_bytes, k_pad,
                 depth, term, 16 * b, rq, p, c + r * c_stride, c_stride, 1);
  }
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_gemm_avx512vnni_unused;
#endif
