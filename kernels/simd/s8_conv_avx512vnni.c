/* CONV_2D with AVX-512 VNNI, straight from the image (no im2col).
 *
 * The sample is first copied into scratch with its padding made explicit and
 * every byte shifted to unsigned (x ^ 0x80 == x + 128, the operand vpdpbusd
 * wants; the packed terms already hold the matching -128 * rowsum). Every
 * window then lies inside that copy, and each segment t of the depth of
 * output pixel p is contiguous bytes at corner(p) + tap_off[t]: the GEMM tile
 * below reads them in place. Compared with im2col this skips writing and
 * re-reading taps x the image, and the per-quad broadcast needs no xor.
 *
 * The weights are the dense AVX512VNNI packing of the [out_c, kh*kw*in_c]
 * filter matrix, whose depth the kernel walks as segments of whole quads:
 *   - without horizontal dilation, a segment is one window row: kw * in_c
 *     contiguous bytes of the copy, quads ky * kw*in_c/4 + q of the packing
 *     when kw * in_c % 4 == 0. Three segments for a 3x3 filter rather than
 *     nine taps, and a one-channel 10x4 filter is 10 quads, not 40. When
 *     kw * in_c % 4 != 0 the last quad of a row runs into the next pixel;
 *     the weights are then repacked into scratch on each call with zeros
 *     there (a few hundred bytes for an RGB first layer).
 *   - dilated: a segment is one tap, in_c bytes at corner + tap_off[t], the
 *     channels zero-padded to a multiple of 4 in the copy (weights repacked
 *     to match) unless in_c % 4 == 0.
 * Block-sparse weights take im2col (conv_2d.c).
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

#define MAX_TAPS 64
/* Readable bytes after the copy's last pixel. */
#define SLACK 8
/* Largest padded sample copied; past it, im2col's bounded chunks use less memory. */
#define MAX_PADDED_BYTES ((size_t)8 << 20)

typedef struct {
  const uint8_t* x;  /* the padded, unsigned sample */
  size_t image_bytes; /* scratch it takes (image_bytes()); the repacked weights follow */
  size_t pix_step;   /* bytes between horizontally adjacent windows */
  size_t line_step;  /* bytes between vertically adjacent windows */
  size_t out_w, rows;
  size_t quads;      /* quads per depth segment */
  size_t taps;       /* depth segments */
  size_t tap_off[MAX_TAPS];
} conv_geom;

/* How a window's depth maps onto the copy (see the top of the file). */
typedef struct {
  size_t image_c;  /* channels per pixel in the copy */
  size_t segs;     /* depth segments */
  size_t seg;      /* depth values per segment */
  size_t quads;    /* quads per segment, the last zero-padded */
  int window_rows; /* segments are window rows, not taps */
  int repack;      /* the packed quads do not line up with the segments */
} conv_layout;

static conv_layout layout_of(const edged_op* op) {
  conv_layout l;
  const size_t in_c = (size_t)op->in_c, fw = (size_t)op->filter_w;
  l.window_rows = op->dilation_w == 1;
  l.image_c = in_c % 4 == 0 || l.window_rows ? in_c : (in_c + 3) & ~(size_t)3;
  l.segs = (size_t)op->filter_h * (l.window_rows ? 1 : fw);
  l.seg = l.window_rows ? fw * in_c : in_c;
  l.quads = (l.seg + 3) / 4;
  l.repack = l.seg % 4 != 0;
  return l;
}

/* Bytes of the padded copy and its slack (a window row's last quad may read
 * 3 bytes past the last pixel), rounded up to keep the repacked weights
 * after it 64-byte aligned (relative to scratch). */
static size_t image_bytes(const conv_layout* l, size_t ph, size_t pw) {
  return (ph * pw * l->image_c + SLACK + 63) & ~(size_t)63;
}

/* Bytes of the repacked weights: 0 when used as packed. */
static size_t repacked_bytes(const edged_op* op, const conv_layout* l) {
  if (!l->repack) return 0;
  const size_t blocks = ((size_t)op->out_c + 15) / 16;
  return blocks * 16 * l->segs * l->quads * 4;
}

size_t edged_s8_conv_avx512vnni_scratch(const edged_op* op) {
  if (op->in_c <= 0 || op->out_c <= 0 || op->out_h <= 0 || op->out_w <= 0 || op->filter_h <= 0 ||
      op->filter_w <= 0 || (int64_t)op->filter_h * op->filter_w > MAX_TAPS || op->stride_h <= 0 ||
      op->stride_w <= 0 || op->dilation_h <= 0 || op->dilation_w <= 0)
    return 0;
  /* Each factor below 2^32, so no product wraps before the size cap. */
  const size_t ph = edged_padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = edged_padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  if (ph > MAX_PADDED_BYTES || pw > MAX_PADDED_BYTES || ph * pw > MAX_PADDED_BYTES ||
      (size_t)op->in_c > MAX_PADDED_BYTES || (size_t)op->out_c > MAX_PADDED_BYTES)
    return 0;
  const conv_layout l = layout_of(op);
  const size_t bytes = image_bytes(&l, ph, pw) + repacked_bytes(op, &l);
  return bytes <= MAX_PADDED_BYTES ? bytes : 0;
}

/* The packed weights re-cut into the layout's segments, each zero-padded to
 * whole quads, same layout otherwise (16-channel blocks of depth quads).
 * Output quad q of segment t holds depth d0 = t * seg + 4q onwards: bytes r
 * = d0 % 4 .. 3 of packed quad d0 / 4 and bytes 0 .. r - 1 of the next, per
 * channel, which are two 32-bit lane shifts and an or; depth past the
 * segment is masked to zero. */
VNNI_TARGET static void repack_weights(const edged_op* op, const conv_layout* l, int8_t* dst) {
  const edged_packed_header* h = (const edged_packed_header*)op->weights;
  const int8_t* src = edged_packed_weights(op->weights);
  const size_t blocks = (size_t)h->n_pad / 16, src_quads = (size_t)h->k_pad / 4;
  for (size_t b = 0; b < blocks; ++b) {
    const int8_t* sb = src + b * 64 * src_quads;
    for (size_t t = 0; t < l->segs; ++t)
      for (size_t q = 0; q < l->quads; ++q, dst += 64) {
        const size_t d0 = t * l->seg + 4 * q, sq = d0 / 4, r = d0 % 4;
        const size_t live = l->seg - 4 * q < 4 ? l->seg - 4 * q : 4; /* bytes of this quad in the segment */
        const __m512i lo = _mm512_loadu_si512(sb + sq * 64);
        __m512i v = lo;
        if (r != 0) {
          const __m512i hi = sq + 1 < src_quads ? _mm512_loadu_si512(sb + (sq + 1) * 64) : _mm512_setzero_si512();
          v = _mm512_or_si512(_mm512_srli_epi32(lo, (unsigned)(8 * r)), _mm512_slli_epi32(hi, (unsigned)(32 - 8 * r)));
        }
        if (live < 4) v = _mm512_and_si512(v, _mm512_set1_epi32((int)((UINT32_C(1) << (8 * live)) - 1u)));
        _mm512_storeu_si512(dst, v);
      }
  }
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

/* The padded, unsigned copy of one sample with l->image_c channels per pixel
 * (channels past in_c hold the fill too; their weights are zero); fills in g. */
VNNI_INLINE void pad_sample(const edged_op* op, const conv_layout* l, const int8_t* x, uint8_t* dst,
                            conv_geom* g) {
  const size_t in_c = (size_t)op->in_c, ic = l->image_c;
  const size_t ph = edged_padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = edged_padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  const uint8_t fill = (uint8_t)((-op->input_offset) ^ 0x80);
  const int64_t left = op->pad_left;
  int64_t c0, c1;
  edged_input_columns(op->pad_left, op->in_w, pw, &c0, &c1);
  const size_t row_bytes = pw * ic;
  for (size_t r = 0; r < ph; ++r) {
    uint8_t* d = dst + r * row_bytes;
    const int64_t iy = (int64_t)r - op->pad_top;
    if (iy < 0 || iy >= op->in_h || c1 <= c0) {
      memset(d, fill, row_bytes);
      continue;
    }
    const int8_t* src = x + ((size_t)iy * (size_t)op->in_w + (size_t)(c0 - left)) * in_c;
    memset(d, fill, (size_t)c0 * ic);
    if (ic == in_c) {
      copy_unsigned(d + (size_t)c0 * ic, src, (size_t)(c1 - c0) * in_c);
    } else {
      /* A quad at a time: byte loops here become a memset call per pixel. */
      for (size_t col = (size_t)c0; col < (size_t)c1; ++col, src += in_c)
        for (size_t q = 0; q < ic; q += 4) {
          uint32_t v = 0;
          for (size_t e = 0; e < 4; ++e)
            v |= (uint32_t)(q + e < in_c ? (uint8_t)(src[q + e] ^ 0x80) : fill) << (8 * e);
          memcpy(d + col * ic + q, &v, 4);
        }
    }
    memset(d + (size_t)c1 * ic, fill, (pw - (size_t)c1) * ic);
  }
  memset(dst + ph * row_bytes, fill, SLACK);
  g->x = dst;
  g->image_bytes = image_bytes(l, ph, pw);
  g->pix_step = (size_t)op->stride_w * ic;
  g->line_step = (size_t)op->stride_h * row_bytes;
  g->out_w = (size_t)op->out_w;
  g->rows = (size_t)op->out_h * (size_t)op->out_w;
  g->quads = l->quads;
  g->taps = 0;
  for (int32_t ky = 0; ky < op->filter_h; ++ky) {
    if (l->window_rows) {
      g->tap_off[g->taps++] = (size_t)ky * (size_t)op->dilation_h * row_bytes;
      continue;
    }
    for (int32_t kx = 0; kx < op->filter_w; ++kx)
      g->tap_off[g->taps++] = (size_t)ky * (size_t)op->dilation_h * row_bytes +
                              (size_t)kx * (size_t)op->dilation_w * ic;
  }
}

VNNI_INLINE __m512i bcast_quad(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32((int)v);
}

/* The quads of one tap of MR windows times NB blocks. With ROW set the
 * windows are neighbours in one output row, corner i = c0 + i * step: four
 * registers address all eight (scaled-index forms), where eight separate
 * pointers would not fit the general-purpose registers next to the loop's
 * own and would be reloaded from the stack on every broadcast. */
VNNI_INLINE void tap_quads(__m512i acc[16][2], const uint8_t* const* corner, size_t step, size_t off,
                           const int8_t* wq, size_t quads, size_t block_bytes, const int mr, const int nb,
                           const int row) {
  const uint8_t* a = row ? corner[0] + off : NULL;
  const uint8_t* b = row ? a + 4 * step : NULL;
  const uint8_t* c = row ? a + 8 * step : NULL;
  const uint8_t* d = row ? b + 8 * step : NULL;
  const size_t step3 = 3 * step;
  for (size_t q = 0; q < quads; ++q, wq += 64) {
    __m512i wv[2];
    for (int k = 0; k < nb; ++k) wv[k] = _mm512_loadu_si512(wq + (size_t)k * block_bytes);
    for (int i = 0; i < mr; ++i) {
      const uint8_t* src;
      if (row) {
        const uint8_t* base = i < 4 ? a : i < 8 ? b : i < 12 ? c : d;
        const int j = i & 3;
        src = base + 4 * q + (j == 0 ? 0 : j == 1 ? step : j == 2 ? 2 * step : step3);
      } else {
        src = corner[i] + off + 4 * q;
      }
      const __m512i xv = bcast_quad(src);
      for (int k = 0; k < nb; ++k) acc[i][k] = edged_dpbusd(acc[i][k], xv, wv[k]);
    }
  }
}

/* Output pixels [r, r + mr) times NB blocks of 16 channels from channel o.
 * Pixels past the last alias it (computed, never stored). */
VNNI_INLINE void conv_tile(const conv_geom* g, size_t r, const int8_t* w, size_t block_bytes,
                           const int32_t* term, size_t o, const edged_requant* rq, const rq16* p,
                           int8_t* y, size_t y_stride, const int mr, const int nb) {
  /* One division per tile. A tile within one output row addresses its
   * windows from the first corner (tap_quads); one that wraps steps its
   * corners along the rows. */
  const uint8_t* corner[16];
  size_t oy = r / g->out_w, ox = r % g->out_w;
  const int row = ox + (size_t)mr <= g->out_w;
  corner[0] = g->x + oy * g->line_step + ox * g->pix_step;
  for (int i = 1; i < mr && !row; ++i) {
    if (r + (size_t)i < g->rows && ++ox == g->out_w) { /* past the last pixel: alias it */
      ox = 0;
      ++oy;
    }
    corner[i] = g->x + oy * g->line_step + ox * g->pix_step;
  }
  __m512i acc[16][2];
  for (int i = 0; i < mr; ++i)
    for (int k = 0; k < nb; ++k) acc[i][k] = _mm512_setzero_si512();
  const size_t tap_bytes = 64 * g->quads;
  for (size_t t = 0; t < g->taps; ++t) {
    const int8_t* wq = w + t * tap_bytes;
    if (row)
      tap_quads(acc, corner, g->pix_step, g->tap_off[t], wq, g->quads, block_bytes, mr, nb, 1);
    else
      tap_quads(acc, corner, g->pix_step, g->tap_off[t], wq, g->quads, block_bytes, mr, nb, 0);
  }
  const size_t valid = row || g->rows - r >= (size_t)mr ? (size_t)mr : g->rows - r;
  /* rq16_store_rows written out: handing it &acc[0][k] keeps gcc from
   * holding this tile's accumulators in registers through the taps. */
  for (int k = 0; k < nb; ++k) {
    const __m512i tv = _mm512_loadu_si512(term + o + 16 * (size_t)k);
    int8_t* yk = y + r * y_stride + o + 16 * (size_t)k;
    if (rq16_is_up(&p[k], rq)) {
      const rq16_up u = rq16_up_of(&p[k], rq);
      if (u.full_range) {
        for (size_t i = 0; i < valid; ++i)
          rq16_put(&p[k], rq16_up_apply(&u, _mm512_add_epi32(acc[i][k], tv), 1), yk + i * y_stride);
      } else {
        for (size_t i = 0; i < valid; ++i)
          rq16_put(&p[k], rq16_up_apply(&u, _mm512_add_epi32(acc[i][k], tv), 0), yk + i * y_stride);
      }
      continue;
    }
    const edged_requant rql = *rq;
    const rq16 pk = p[k];
    for (size_t i = 0; i < valid; ++i) rq16_store(&pk, _mm512_add_epi32(acc[i][k], tv), &rql, yk + i * y_stride);
  }
}

VNNI_TARGET void edged_s8_conv_avx512vnni(const edged_op* op, const int8_t* x, void* scratch, int8_t* y,
                                          const edged_requant* rq) {
  const conv_layout l = layout_of(op);
  conv_geom g;
  pad_sample(op, &l, x, (uint8_t*)scratch, &g);
  const edged_packed_header* h = (const edged_packed_header*)op->weights;
  const size_t n = (size_t)h->out_c, nblocks = (size_t)h->n_pad / 16;
  const int32_t* term = edged_packed_terms(op->weights);
  const int8_t* w = edged_packed_weights(op->weights);
  size_t block_bytes = 16 * (size_t)h->k_pad;
  if (l.repack) {
    int8_t* repacked = (int8_t*)scratch + g.image_bytes;
    repack_weights(op, &l, repacked);
    w = repacked;
    block_bytes = 16 * l.segs * l.quads * 4;
  }

  /* Channel-block pairs outer, pixels inner: the pair's weights stay in L1
   * while the windows stream past. */
  size_t b = 0;
  for (; b + 2 <= nblocks; b += 2) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    rq16_load(&p[1], rq, 16 * b + 16, n);
    for (size_t r = 0; r < g.rows; r += 8)
      conv_tile(&g, r, w + b * block_bytes, block_bytes, term, 16 * b, rq, p, y, n, 8, 2);
  }
  if (b < nblocks) {
    rq16 p[2];
    rq16_load(&p[0], rq, 16 * b, n);
    p[1] = p[0];
    if (g.out_w >= 16) {
      for (size_t r = 0; r < g.rows; r += 16)
        conv_tile(&g, r, w + b * block_bytes, block_bytes, term, 16 * b, rq, p, y, n, 16, 1);
    } else {
      for (size_t r = 0; r < g.rows; r += 8)
        conv_tile(&g, r, w + b * block_bytes, block_bytes, term, 16 * b, rq, p, y, n, 8, 1);
    }
  }
}

#else
/* Keeps this translation unit non-empty on other architectures (ISO C). */
typedef int edged_s8_conv_avx512vnni_unused;
#endif
