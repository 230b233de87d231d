/* DEPTHWISE_CONV_2D for x86-64 with AVX-512 VNNI, depth multiplier 1.
 *
 * vpdpwssd adds x0*w0 + x1*w1 per int32 lane from int16 pairs, so it takes
 * two taps of one channel at once. Each sample is first rewritten into
 * scratch so that those pairs already sit side by side in memory:
 *
 *   pairs[r][col][c] = (x[r][col][c], x[r][col + dilation_w][c])
 *
 * over the padded image (padding holds the input zero point). Taps kx and
 * kx + 1 of a window row are then one 32-byte load per 16 channels, widened
 * with vpmovsxbw, against the matching weight pairs held in registers; an odd
 * last tap pairs with a zero weight. The (x + input_offset) of the reference
 * becomes x alone with input_offset * sum(w) folded into the bias (exact in
 * wrapping int32 arithmetic; the padding contributes x + input_offset = 0
 * either way), so the loop is a load and a vpdpwssd per tap pair. Each
 * product is at most 128 * 128 in magnitude, so a pair sum never wraps.
 *
 * With an even horizontal stride every tap pair starts on an even column, so
 * only those are built: half the image for the stride-2 layers.
 *
 * Channels go 16 per block, blocks outer and pixels inner, so a block's
 * weights, bias and requantization constants stay put while the pixels
 * stream past. Rounding follows LiteRT's x86 depthwise path: ties up below
 * out_c - out_c % 8, away from zero above.
 */
#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

#define MAX_TAPS 64
/* Largest pair image built; past it the AVX2 kernel runs without scratch. */
#define MAX_SCRATCH_BYTES ((size_t)16 << 20)

typedef struct {
  const int8_t* pairs;
  size_t line_step;  /* bytes between vertically adjacent windows */
  size_t pix_step;   /* bytes between horizontally adjacent windows */
  size_t out_w, out_c;
  size_t fh, np;     /* window rows, tap pairs per window row */
  size_t row_off[MAX_TAPS];
  size_t pair_off[MAX_TAPS];
} dw_geom;

/* Padded columns per stored pair column: 2 with an even stride (only even
 * columns are read), else 1. */
static size_t column_step(const edged_op* op) { return op->stride_w % 2 == 0 ? 2 : 1; }

/* Stored pair columns of a padded row of pw columns. */
static size_t pair_cols(const edged_op* op, size_t pw) {
  const size_t step = column_step(op);
  return (pw + step - 1) / step;
}

size_t edged_s8_dwconv_avx512_scratch(const edged_op* op) {
  if (op->depth_multiplier != 1 || op->in_c <= 0 || op->out_h <= 0 || op->out_w <= 0 ||
      op->filter_h <= 0 || op->filter_w <= 0 || (int64_t)op->filter_h * op->filter_w > MAX_TAPS ||
      op->stride_h <= 0 || op->stride_w <= 0 || op->dilation_h <= 0 || op->dilation_w <= 0)
    return 0;
  const size_t ph = edged_padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = edged_padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  const size_t c = (size_t)op->in_c;
  /* Every factor is below 2^32 and checked before it multiplies. */
  if (ph > MAX_SCRATCH_BYTES || pw > MAX_SCRATCH_BYTES || c > MAX_SCRATCH_BYTES ||
      ph * pw > MAX_SCRATCH_BYTES || (size_t)op->dilation_w > MAX_SCRATCH_BYTES)
    return 0;
  /* The pair image, then one padded input row (pw + dilation_w columns). */
  const size_t bytes = ph * pair_cols(op, pw) * 2 * c + (pw + (size_t)op->dilation_w) * c;
  return bytes <= MAX_SCRATCH_BYTES ? bytes : 0;
}

/* Interleaves a[0..n) and b[0..n) byte by byte into dst[0..2n). */
VNNI_INLINE void interleave(int8_t* dst, const int8_t* a, const int8_t* b, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    /* In-lane unpacks: lo holds (a, b) pairs of bytes 0-7 | 16-23, hi of
     * 8-15 | 24-31; two lane permutes put them back in order. */
    const __m256i va = _mm256_loadu_si256((const __m256i*)(a + i));
    const __m256i vb = _mm256_loadu_si256((const __m256i*)(b + i));
    const __m256i lo = _mm256_unpacklo_epi8(va, vb), hi = _mm256_unpackhi_epi8(va, vb);
    _mm256_storeu_si256((__m256i*)(dst + 2 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i*)(dst + 2 * i + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
  }
  for (; i + 16 <= n; i += 16) {
    const __m128i va = _mm_loadu_si128((const __m128i*)(a + i));
    const __m128i vb = _mm_loadu_si128((const __m128i*)(b + i));
    _mm_storeu_si128((__m128i*)(dst + 2 * i), _mm_unpacklo_epi8(va, vb));
    _mm_storeu_si128((__m128i*)(dst + 2 * i + 16), _mm_unpackhi_epi8(va, vb));
  }
  for (; i < n; ++i) {
    dst[2 * i] = a[i];
    dst[2 * i + 1] = b[i];
  }
}

/* The pair image of one sample into scratch; fills in g. */
VNNI_INLINE void build_pairs(const edged_op* op, const int8_t* x, int8_t* scratch, dw_geom* g) {
  const size_t c = (size_t)op->in_c, dw = (size_t)op->dilation_w;
  const size_t ph = edged_padded_extent(op->out_h, op->stride_h, op->filter_h, op->dilation_h);
  const size_t pw = edged_padded_extent(op->out_w, op->stride_w, op->filter_w, op->dilation_w);
  const int8_t fill = (int8_t)(-op->input_offset);
  const size_t step = column_step(op), cols = pair_cols(op, pw);
  const size_t pair_row = cols * 2 * c;
  int8_t* row = scratch + ph * pair_row; /* one padded input row, pw + dw columns */
  const size_t row_cols = pw + dw;
  const int64_t left = op->pad_left;
  int64_t c0, c1;
  edged_input_columns(op->pad_left, op->in_w, row_cols, &c0, &c1);
  for (size_t r = 0; r < ph; ++r) {
    int8_t* dst = scratch + r * pair_row;
    const int64_t iy = (int64_t)r - op->pad_top;
    if (iy < 0 || iy >= op->in_h || c1 <= c0) {
      memset(dst, fill, pair_row);
      continue;
    }
    memset(row, fill, (size_t)c0 * c);
    memcpy(row + (size_t)c0 * c, x + ((size_t)iy * (size_t)op->in_w + (size_t)(c0 - left)) * c,
           (size_t)(c1 - c0) * c);
    memset(row + (size_t)c1 * c, fill, (row_cols - (size_t)c1) * c);
    if (step == 1) {
      interleave(dst, row, row + dw * c, pw * c);
    } else {
      for (size_t j = 0; j < cols; ++j)
        interleave(dst + j * 2 * c, row + j * step * c, row + (j * step + dw) * c, c);
    }
  }
  g->pairs = scratch;
  g->line_step = (size_t)op->stride_h * pair_row;
  g->pix_step = (size_t)op->stride_w / step * 2 * c;
  g->out_w = (size_t)op->out_w;
  g->out_c = c;
  g->fh = (size_t)op->filter_h;
  g->np = ((size_t)op->filter_w + 1) / 2;
  for (size_t ky = 0; ky < g->fh; ++ky) g->row_off[ky] = ky * (size_t)op->dilation_h * pair_row;
  for (size_t kp = 0; kp < g->np; ++kp) g->pair_off[kp] = 2 * kp * dw / step * 2 * c;
}

/* bias + the window at `base` (its tap pairs, `load` selecting the bytes
 * read) against the weight pairs wp: fh rows of np pairs. */
VNNI_INLINE __m512i window_sum(const dw_geom* g, const int8_t* base, __mmask32 load, const __m512i* wp,
                               __m512i bias, size_t fh, size_t np) {
  __m512i acc = bias;
  for (size_t ky = 0; ky < fh; ++ky) {
    const int8_t* line = base + g->row_off[ky];
    for (size_t kp = 0; kp < np; ++kp) {
      /* A full load folds into vpmovsxbw's memory operand; a masked one does not. */
      const __m256i bytes = load == 0xFFFFFFFFu ? _mm256_loadu_si256((const __m256i*)(line + g->pair_off[kp]))
                                                : _mm256_maskz_loadu_epi8(load, line + g->pair_off[kp]);
      const __m512i xv = _mm512_cvtepi8_epi16(bytes);
      __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(xv), "vm"(wp[ky * np + kp]));
    }
  }
  return acc;
}

/* Channels [c, c + 16) of every output pixel. FH and NP are the window rows
 * and tap pairs per row when known at compile time (3x3), else 0. */
VNNI_INLINE void block_pixels(const dw_geom* g, size_t rows, size_t c, __mmask32 load_mask,
                              const __m512i* wp, __m512i bias, const rq16_split* q, int8_t* y, const int FH,
                              const int NP) {
  const size_t fh = FH ? (size_t)FH : g->fh, np = NP ? (size_t)NP : g->np;
  size_t oy = 0, ox = 0;
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* base = g->pairs + oy * g->line_step + ox * g->pix_step + 2 * c;
    const __m512i acc = window_sum(g, base, load_mask, wp, bias, fh, np);
    rq16_put(&q->lo, rq16_split_apply(q, acc), y + r * g->out_c + c);
    if (++ox == g->out_w) {
      ox = 0;
      ++oy;
    }
  }
}

/* Eight channels: two horizontally neighbouring output pixels per vector.
 * With windows 16 bytes apart in the pair image (stride 1, or stride 2 on
 * its even columns) their tap pairs are one 32-byte load, against the
 * weights, bias and requantization constants repeated for both halves, and
 * their outputs are 16 contiguous bytes. A row's odd last pixel goes alone. */
VNNI_INLINE void pixel_pairs8(const dw_geom* g, size_t out_h, const __m512i* wp, __m512i bias,
                              const rq16_split* q, int8_t* y, const int FH, const int NP) {
  const size_t fh = FH ? (size_t)FH : g->fh, np = NP ? (size_t)NP : g->np;
  rq16 single = q->lo;
  single.store_mask = 0xFF;
  for (size_t oy = 0; oy < out_h; ++oy) {
    for (size_t ox = 0; ox < g->out_w; ox += 2) {
      const int two = ox + 1 < g->out_w;
      const __mmask32 load = two ? 0xFFFFFFFFu : 0xFFFFu;
      const int8_t* base = g->pairs + oy * g->line_step + ox * g->pix_step;
      const __m512i acc = window_sum(g, base, load, wp, bias, fh, np);
      rq16_put(two ? &q->lo : &single, rq16_split_apply(q, acc), y + (oy * g->out_w + ox) * 8);
    }
  }
}

VNNI_TARGET void edged_s8_dwconv_avx512(const edged_op* op, int32_t batch) {
  const size_t c_all = (size_t)op->out_c, body = c_all - c_all % 8;
  const size_t fh = (size_t)op->filter_h, fw = (size_t)op->filter_w, np = (fw + 1) / 2;
  const size_t rows = (size_t)op->out_h * (size_t)op->out_w;
  const int8_t* w = (const int8_t*)op->weights;
  const edged_requant rq_up = edged_requant_of(op, 0, 0), rq_away = edged_requant_of(op, 1, 0);
  dw_geom g;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    build_pairs(op, x, (int8_t*)op->scratch, &g);
    for (size_t c = 0; c < c_all; c += 16) {
      const size_t n = c_all - c < 16 ? c_all - c : 16;
      /* Weight pairs (w[ky][2kp][ch], w[ky][2kp+1][ch]) as int16, zero past
       * the window and past the channels; their sum for the bias fold. */
      const __mmask16 lanes = (__mmask16)((1u << n) - 1u);
      __m512i wp[MAX_TAPS];
      __m512i wsum = _mm512_setzero_si512();
      for (size_t ky = 0; ky < fh; ++ky)
        for (size_t kp = 0; kp < np; ++kp) {
          const int8_t* w0 = w + (ky * fw + 2 * kp) * c_all + c;
          const __m128i a = _mm_maskz_loadu_epi8(lanes, w0);
          const __m128i z = _mm_setzero_si128();
          const __m128i b2 = 2 * kp + 1 < fw ? _mm_maskz_loadu_epi8(lanes, w0 + c_all) : z;
          const __m256i ab = _mm256_set_m128i(_mm_unpackhi_epi8(a, b2), _mm_unpacklo_epi8(a, b2));
          wp[ky * np + kp] = _mm512_cvtepi8_epi16(ab);
          wsum = _mm512_add_epi32(wsum, _mm512_madd_epi16(wp[ky * np + kp], _mm512_set1_epi16(1)));
        }
      const __m512i bias0 = op->bias ? _mm512_maskz_loadu_epi32(lanes, op->bias + c) : _mm512_setzero_si512();
      const __m512i bias_v = _mm512_add_epi32(bias0, _mm512_mullo_epi32(wsum, _mm512_set1_epi32(op->input_offset)));
      rq16_split q;
      rq16_split_load(&q, &rq_up, &rq_away, c, c_all, body);
      if (c_all == 8 && g.pix_step == 16) {
        /* Both halves of every vector: the 8 channels' constants twice. */
        for (size_t k = 0; k < fh * np; ++k) wp[k] = _mm512_shuffle_i64x2(wp[k], wp[k], 0x44);
        const __m512i bias2 = _mm512_shuffle_i64x2(bias_v, bias_v, 0x44);
        int32_t mult[16], shift[16];
        for (size_t j = 0; j < 16; ++j) {
          mult[j] = op->out_multiplier[j % 8];
          shift[j] = op->out_shift[j % 8];
        }
        const edged_requant rq2 = {mult, shift, op->output_offset, op->act_min, op->act_max, 0, 0};
        rq16_split q2; /* 8 channels, every one below body: ties up */
        rq16_split_load(&q2, &rq2, &rq2, 0, 16, 16);
        if (fh == 3 && np == 2)
          pixel_pairs8(&g, (size_t)op->out_h, wp, bias2, &q2, y, 3, 2);
        else
          pixel_pairs8(&g, (size_t)op->out_h, wp, bias2, &q2, y, 0, 0);
        continue;
      }
      const __mmask32 load_mask = (__mmask32)(n == 16 ? 0xFFFFFFFFu : (1u << (2 * n)) - 1u);
      if (fh == 3 && np == 2 && load_mask == 0xFFFFFFFFu) /* the constant mask specializes the loads */
        block_pixels(&g, rows, c, 0xFFFFFFFFu, wp, bias_v, &q, y, 3, 2);
      else if (fh == 3 && np == 2)
        block_pixels(&g, rows, c, load_mask, wp, bias_v, &q, y, 3, 2);
      else
        block_pixels(&g, rows, c, load_mask, wp, bias_v, &q, y, 0, 0);
    }
  }
}

#else
typedef int edged_s8_dwconv_avx512_unused;
#endif
