/* CONV_2D with AVX-512 VNNI, straight from the image (no im2col).
 *
 * The sample is first copied into scratch with its padding made explicit and
 * every byte shifted to unsigned (x ^ 0x80 == x + 128, the operand vpdpbusd
 * wants; the packed terms already hold the matching -128 * rowsum). Every
 * window then lies inside that copy, and the depth values of output pixel p,
 * tap t, are in_c contiguous bytes at corner(p) + tap_off[t]: the GEMM tile
 * below reads them in place. Compared with im2col this skips writing and
 * re-reading taps x the image, and the per-quad broadcast needs no xor.
 *
 * The weights are the dense AVX512VNNI packing of the [out_c, kh*kw*in_c]
 * filter matrix. With in_c % 4 == 0 every depth quad lies inside one tap, so
 * quad q of tap t is packed quad t * in_c/4 + q. Other channel counts, and
 * block-sparse weights, take im2col (conv_2d.c).
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

#define MAX_TAPS 64
/* Largest padded sample copied; past it, im2col's bounded chunks use less memory. */
#define MAX_PADDED_BYTES ((size_t)8 << 20)

typedef struct {
  const uint8_t* x;  /* the padded, unsigned sample */
  size_t row_bytes;  /* bytes per padded image row */
  size_t pix_step;   /* bytes between horizontally adjacent windows */
  size_t line_step;  /* bytes between vertically adjacent windows */
  size_t out_w, rows;
  size_t quads;      /* in_c / 4 */
  size_t taps;
  size_t tap_off[MAX_TAPS];
} conv_geom;

/* Rows of the padded copy: the input rows [-pad_top, -pad_top + n) a window
 * can touch. Same for columns. */
static size_t padded_extent(int32_t out, int32_t stride, int32_t filter, int32_t dilation) {
  return (size_t)(out - 1) * (size_t)stride + (size_t)(filter - 1) * (size_t)dilation + 1; /* < 2^63 */
}

size_t edged_s8_conv_avx512vnni_scratch(const edged_op* op) {
  if (op->in_c <= 0 || op->in_c % 4 != 0 || op->out_h <= 0 || op->out_w <= 0 || op->filter_h <= 0 ||
      op->filter_w <= 0 || (int64_t)op->filter_h * op->filter_w > MAX_TAPS || op->stride_h <= 0 ||
      op->stride_w <= 0 || op->dilation_h <= 0 || op->dilation_w <= 0)
    return 0;
  /* Each factor below 2^32, so no product wraps before the size cap. */
  const size_t ph = padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  if (ph > MAX_PADDED_BYTES || pw > MAX_PADDED_BYTES || ph * pw > MAX_PADDED_BYTES) return 0;
  const size_t bytes = ph * pw * (size_t)op->in_c;
  return bytes <= MAX_PADDED_BYTES ? bytes : 0;
}

/* n bytes from src to dst, each ^ 0x80. */
VNNI_INLINE void copy_unsigned(uint8_t* dst, const int8_t* src, size_t n) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  size_t i = 0;
  for (; i + 64 <= n; i += 64)
    _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
  if (i < n) {
    const __mmask64 m = (__mmask64)((UINT64_C(1) << (n - i)) - 1u); /* n - i < 64 */
    _mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + i), flip));
  }
}

/* The padded, unsigned copy of one sample; returns its geometry. */
VNNI_INLINE void pad_sample(const edged_op* op, const int8_t* x, uint8_t* dst, conv_geom* g) {
  const size_t in_c = (size_t)op->in_c;
  const size_t ph = padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  const uint8_t fill = (uint8_t)((-op->input_offset) ^ 0x80);
  /* Input columns [c0, c1) of a padded row are real; the rest is padding. */
  const int64_t left = op->pad_left;
  const int64_t c0 = left > 0 ? left : 0;
  int64_t c1 = left + op->in_w;
  if (c1 > (int64_t)pw) c1 = (int64_t)pw;
  const size_t row_bytes = pw * in_c;
  for (size_t r = 0; r < ph; ++r) {
    uint8_t* d = dst + r * row_bytes;
    const int64_t iy = (int64_t)r - op->pad_top;
    if (iy < 0 || iy >= op->in_h || c1 <= c0) {
      memset(d, fill, row_bytes);
      continue;
    }
    memset(d, fill, (size_t)c0 * in_c);
    copy_unsigned(d + (size_t)c0 * in_c, x + ((size_t)iy * (size_t)op->in_w + (size_t)(c0 - left)) * in_c,
                  (size_t)(c1 - c0) * in_c);
    memset(d + (size_t)c1 * in_c, fill, (pw - (size_t)c1) * in_c);
  }
  g->x = dst;
  g->row_bytes = row_bytes;
  g->pix_step = (size_t)op->stride_w * in_c;
  g->line_step = (size_t)op->stride_h * row_bytes;
  g->out_w = (size_t)op->out_w;
  g->rows = (size_t)op->out_h * (size_t)op->out_w;
  g->quads = in_c / 4;
  g->taps = 0;
  for (int32_t ky = 0; ky < op->filter_h; ++ky)
    for (int32_t kx = 0; kx < op->filter_w; ++kx)
      g->tap_off[g->taps++] = (size_t)ky * (size_t)op->dilation_h * row_bytes +
                              (size_t)kx * (size_t)op->dilation_w * in_c;
}

VNNI_INLINE __m512i bcast_quad(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32((int)v);
}

/* Output pixels [r, r + mr) times NB blocks of 16 channels from block b0.
 * Pixels past the last alias it (computed, never stored). */
VNNI_INLINE void conv_tile(const conv_geom* g, size_t r, const int8_t* w, size_t block_bytes,
                           const int32_t* term, size_t o, const edged_requant* rq, const rq16* p,
                           int8_t* y, size_t y_stride, const int mr, const int nb) {
  const uint8_t* corner[8];
  for (int i = 0; i < mr; ++i) {
    const size_t pix = r + (size_t)i < g->rows ? r + (size_t)i : g->rows - 1;
    corner[i] = g->x + (pix / g->out_w) * g->line_step + (pix % g->out_w) * g->pix_step;
  }
  __m512i acc[8][2];
  for (int i = 0; i < mr; ++i)
    for (int b = 0; b < nb; ++b) acc[i][b] = _mm512_setzero_si512();
  const int8_t* wq = w;
  for (size_t t = 0; t < g->taps; ++t) {
    const size_t off = g->tap_off[t];
    for (size_t q = 0; q < g->quads; ++q, wq += 64) {
      __m512i wv[2];
      for (int b = 0; b < nb; ++b) wv[b] = _mm512_loadu_si512(wq + (size_t)b * block_bytes);
      for (int i = 0; i < mr; ++i) {
        const __m512i xv = bcast_quad(corner[i] + off + 4 * q);
        for (int b = 0; b < nb; ++b) acc[i][b] = edged_dpbusd(acc[i][b], xv, wv[b]);
      }
    }
  }
  const size_t valid = g->rows - r < (size_t)mr ? g->rows - r : (size_t)mr;
  for (int b = 0; b < nb; ++b) {
    const __m512i tv = _mm512_loadu_si512(term + o + 16 * (size_t)b);
    for (size_t i = 0; i < valid; ++i)
      rq16_store(&p[b], _mm512_add_epi32(acc[i][b], tv), rq, y + (r + i) * y_stride + o + 16 * (size_t)b);
  }
}

VNNI_TARGET void edged_s8_conv_avx512vnni(const edged_op* op, const int8_t* x, void* scratch, int8_t* y,
                                          const edged_requant* rq) {
  conv_geom g;
  pad_sample(op, x, (uint8_t*)scratch, &g);
  const edged_packed_header* h = (const edged_packed_header*)op->weights;
  const size_t n = (size_t)h->out_c, nblocks = (size_t)h->n_pad / 16;
  const size_t block_bytes = 16 * (size_t)h->k_pad;
  const int32_t* term = edged_packed_terms(op->weights);
  const int8_t* w = edged_packed_weights(op->weights);

  /* Channel-block pairs outer, pixels inner: the pair's weights stay in L1
   * while the windows stream past. */
  size_t b = 0;
  for (; b + 2 <= nblocks; b += 2) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    rq16_load(&p[1], rq, 16 * b + 16, n);
    for (size_t r = 0; r < g.rows; r += 4)
      conv_tile(&g, r, w + b * block_bytes, block_bytes, term, 16 * b, rq, p, y, n, 4, 2);
  }
  if (b < nblocks) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    p[1] = p[0];
    for (size_t r = 0; r < g.rows; r += 8)
      conv_tile(&g, r, w + b * block_bytes, block_bytes, term, 16 * b, rq, p, y, n, 8, 1);
  }
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_conv_avx512vnni_unused;
#endif
