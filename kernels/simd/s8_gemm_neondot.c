/* int8 GEMM for AArch64 with the Armv8.2 dot-product extension (sdot).
 *
 * sdot is signed x signed, so unlike VNNI no activation shift or correction
 * is needed. Weights are blocks of 16 output channels; each 64-byte step holds
 * 4 depth values of all 16 channels, as 4 vectors of 4 channels x 4 depth.
 * Activations are loaded 16 at a time and each 4-byte quad is broadcast by
 * the lane form of sdot, so x costs one load per 16 depth values.
 *
 * Built with a per-function target so the file compiles with plain
 * -march=armv8-a; edged_cpu_variants() decides whether it may run.
 */
#include "internal.h"

#if defined(__aarch64__)
/* The whole file is built for Armv8.2-A + dotprod (a per-function target
 * attribute is not enough for GCC to inline arm_neon.h's sdot intrinsics). */
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#include "neon_requant.h"

#define DOT_TARGET
#define DOT_INLINE static inline __attribute__((always_inline))

/* ROWS rows times NB blocks of 16 channels; rows past the end alias the last
 * real row and are not stored. ROWS * NB * 4 accumulators: 16 for 4x1, 8 for
 * the GEMV shape 1x2. */
DOT_INLINE void tile(const int8_t* a, size_t a_stride, size_t rows, const int8_t* w,
                     size_t k_pad, size_t depth, const int32_t* term, size_t o, size_t n,
                     const edged_requant* rq, int8_t* c, size_t c_stride, const int ROWS,
                     const int NB) {
  const size_t block_bytes = 16 * k_pad;
  const int8_t* x[4];
  for (int i = 0; i < ROWS; ++i) x[i] = a + ((size_t)i < rows ? (size_t)i : rows - 1) * a_stride;
  int32x4_t acc[4][8];
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < 4 * NB; ++v) acc[i][v] = vdupq_n_s32(0);

  const size_t groups = depth / 16; /* full 16-deep groups of activations */
  for (size_t g = 0; g < groups; ++g) {
    int8x16_t xv[4];
    for (int i = 0; i < ROWS; ++i) xv[i] = vld1q_s8(x[i] + 16 * g);
    /* The lane argument of vdotq_laneq_s32 must be a constant. */
#define EDGED_DOT_STEP(L)                                                          \
  for (int b = 0; b < NB; ++b) {                                                   \
    const int8_t* wq = w + (size_t)b * block_bytes + (4 * g + (L)) * 64;           \
    for (int v = 0; v < 4; ++v) {                                                  \
      const int8x16_t wv = vld1q_s8(wq + 16 * v);                                  \
      for (int i = 0; i < ROWS; ++i)                                               \
        acc[i][4 * b + v] = vdotq_laneq_s32(acc[i][4 * b + v], wv, xv[i], (L));    \
    }                                                                              \
  }
    EDGED_DOT_STEP(0)
    EDGED_DOT_STEP(1)
    EDGED_DOT_STEP(2)
    EDGED_DOT_STEP(3)
#undef EDGED_DOT_STEP
  }
  /* Remaining quads (at most 4, the last possibly partial and zero-padded). */
  for (size_t q = 4 * groups; q < k_pad / 4; ++q) {
    int8x16_t xq[4];
    for (int i = 0; i < ROWS; ++i) {
      /* Byte by byte past the row end: a variable-length memcpy would be a
       * call that spills the accumulators. */
      const uint8_t* src = (const uint8_t*)x[i] + 4 * q;
      const size_t left = depth - 4 * q;
      uint32_t quad;
      if (left >= 4) {
        memcpy(&quad, src, 4);
      } else {
        quad = src[0];
        if (left > 1) quad |= (uint32_t)src[1] << 8;
        if (left > 2) quad |= (uint32_t)src[2] << 16;
      }
      xq[i] = vreinterpretq_s8_u32(vdupq_n_u32(quad));
    }
    for (int b = 0; b < NB; ++b) {
      const int8_t* wq = w + (size_t)b * block_bytes + q * 64;
      for (int v = 0; v < 4; ++v) {
        const int8x16_t wv = vld1q_s8(wq + 16 * v);
        for (int i = 0; i < ROWS; ++i) acc[i][4 * b + v] = vdotq_s32(acc[i][4 * b + v], wv, xq[i]);
      }
    }
  }

  for (int b = 0; b < NB; ++b) {
    const size_t ob = o + 16 * (size_t)b;
    if (ob >= n) break;
    edged_rq4 p[4];
    int32x4_t t[4];
    for (int v = 0; v < 4; ++v) {
      edged_rq4_load(&p[v], rq, ob + 4 * (size_t)v, n);
      t[v] = vld1q_s32(term + ob + 4 * (size_t)v);
    }
    for (int i = 0; i < ROWS && (size_t)i < rows; ++i) {
      int32x4_t out[4];
      for (int v = 0; v < 4; ++v) out[v] = edged_rq4_apply(&p[v], vaddq_s32(acc[i][4 * b + v], t[v]), rq);
      edged_store_s8x16(out, c + (size_t)i * c_stride + ob, n - ob);
    }
  }
}

DOT_TARGET void edged_s8_gemm_neondot(size_t m, const int8_t* a, size_t a_stride,
                                      const void* packed, int8_t* c, size_t c_stride,
                                      const edged_requant* rq) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  const size_t n = (size_t)h->out_c, depth = (size_t)h->depth, k_pad = (size_t)h->k_pad;
  const size_t nblocks = (size_t)h->n_pad / 16;
  const int32_t* term = edged_packed_terms(packed);
  const int8_t* w = edged_packed_weights(packed);
  const size_t block_bytes = 16 * k_pad;

  if (m == 1) {
    size_t b = 0;
    for (; b + 2 <= nblocks; b += 2)
      tile(a, a_stride, 1, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, c_stride, 1, 2);
    if (b < nblocks)
      tile(a, a_stride, 1, w + b * block_bytes, k_pad, depth, term, 16 * b, n, rq, c, c_stride, 1, 1);
    return;
  }
  for (size_t b = 0; b < nblocks; ++b)
    for (size_t r = 0; r < m; r += 4)
      tile(a + r * a_stride, a_stride, m - r < 4 ? m - r : 4, w + b * block_bytes, k_pad, depth,
           term, 16 * b, n, rq, c + r * c_stride, c_stride, 4, 1);
}

#pragma GCC pop_options
#else
typedef int edged_s8_gemm_neondot_unused;
#endif
