/* Shared internals of the edged kernels: not part of the cffi contract.
 *
 * Holds the TFLite fixed-point helpers every kernel must agree on bit for bit,
 * the layout of packed GEMM weights, and the GEMM micro-kernel table.
 */
#ifndef EDGED_INTERNAL_H
#define EDGED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "edged_kernels.h"

#if defined(__GNUC__)
#define EDGED_INLINE static inline __attribute__((always_inline))
#define EDGED_UNUSED __attribute__((unused))
#else
#define EDGED_INLINE static inline
#define EDGED_UNUSED
#endif

/* ------------------------------------------------------------------------ */
/* TFLite / gemmlowp fixed-point arithmetic (scalar, the ground truth).      */
/* ------------------------------------------------------------------------ */

/* gemmlowp::SaturatingRoundingDoublingHighMul. gemmlowp writes it as a
 * truncating division of (a*b + nudge) by 2^31 with a sign-dependent nudge;
 * that is exactly floor((a*b + 2^30) / 2^31), which is what the SIMD variants
 * compute (and what NEON's vqrdmulh does). The only overflow is
 * INT32_MIN * INT32_MIN, which saturates to INT32_MAX. */
EDGED_INLINE int32_t edged_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (1 - (INT64_C(1) << 30));
  return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}

/* gemmlowp::RoundingDivideByPOT: divide by 2^exponent rounding half away
 * from zero; exponent in [0, 31]. */
EDGED_INLINE int32_t edged_rdbypot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)((INT64_C(1) << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  /* >> of a negative int is arithmetic on every compiler we target. */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* tflite::MultiplyByQuantizedMultiplier (double rounding), shift in [-31, 30].
 * TFLite computes x * (1 << left_shift) in int32; it wraps on every platform
 * TFLite ships on, so we wrap explicitly instead of relying on UB. */
EDGED_INLINE int32_t edged_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
  return edged_rdbypot(edged_srdhm(shifted, multiplier), right_shift);
}

/* The rounding LiteRT's vector code (ruy on x86, NEON/NEON_2_SSE bodies)
 * applies instead: the same SRDHM (gemmlowp's is already ties-up), then a
 * right shift with ties toward +inf, computed without overflow:
 * floor((r + 2^(e-1)) / 2^e) == (r >> e) + bit (e-1) of r. */
EDGED_INLINE int32_t edged_rshift_rhu(int32_t x, int exponent) {
  if (exponent == 0) return x;
  return (x >> exponent) + ((x >> (exponent - 1)) & 1);
}

EDGED_INLINE int32_t edged_mbqm_rhu(int32_t x, int32_t multiplier, int32_t shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
  return edged_rshift_rhu(edged_srdhm(shifted, multiplier), right_shift);
}

/* TFLite's single-rounding MultiplyByQuantizedMultiplier (LiteRT's aarch64
 * build): x * multiplier / 2^(31 - shift) rounded once, ties toward +inf, in
 * 64 bits, saturated to int32. shift in [-31, 30], so the total shift is in
 * [1, 62] and |x * multiplier| + 2^61 < 2^63. */
EDGED_INLINE int32_t edged_mbqm_single(int32_t x, int32_t multiplier, int32_t shift) {
  const int total = 31 - shift;
  const int64_t r = ((int64_t)x * multiplier + (INT64_C(1) << (total - 1))) >> total;
  return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
}

/* Wrapping int32 add: TFLite's int32 accumulators wrap in practice; doing it
 * through uint32 keeps -fsanitize=undefined quiet and the result identical. */
EDGED_INLINE int32_t edged_wadd(int32_t a, int32_t b) {
  return (int32_t)((uint32_t)a + (uint32_t)b);
}

EDGED_INLINE int32_t edged_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* The full requantization tail of FC/CONV/DEPTHWISE for one value; `mode`
 * is an EDGED_ROUND_* value: ties up (0), gemmlowp's ties away (1), or a
 * single rounding (EDGED_ROUND_SINGLE). */
EDGED_INLINE int8_t edged_requant1(int32_t acc, int32_t multiplier, int32_t shift,
                                   int32_t output_offset, int32_t act_min, int32_t act_max,
                                   int mode) {
  const int32_t scaled = mode == EDGED_ROUND_SINGLE ? edged_mbqm_single(acc, multiplier, shift)
                         : mode == EDGED_ROUND_AWAY ? edged_mbqm(acc, multiplier, shift)
                                                    : edged_mbqm_rhu(acc, multiplier, shift);
  return (int8_t)edged_clamp(edged_wadd(scaled, output_offset), act_min, act_max);
}

/* ------------------------------------------------------------------------ */
/* Packed GEMM weights.                                                       */
/* ------------------------------------------------------------------------ */

/* A packed buffer starts with this header, then `n_pad` int32 per-channel
 * terms (bias + input_offset*rowsum + variant correction; zero past out_c),
 * then the weights. Offsets are from the start of the buffer and are
 * multiples of 64, so a 64-byte aligned buffer gives aligned weight rows (we
 * still only use unaligned loads: Python owns the allocation).
 *
 * Weight layouts (nr = channels per block, kr = depth granule):
 *   REF       nr=1,  kr=1:  w[o][d], exactly the TFLite [out_c, depth] matrix.
 *   AVX2      nr=16, kr=2:  per block, per depth pair p: for j in 0..15:
 *                           w[j][2p], w[j][2p+1]  (32 bytes; vpmovsxbw +
 *                           vpmaddwd against a broadcast int16 pair).
 *   AVX512VNNI nr=16, kr=4: per block, per depth quad q: for j in 0..15:
 *                           w[j][4q..4q+3]  (64 bytes, one vpdpbusd).
 *   NEONDOT   same bytes as AVX512VNNI (16 bytes per 4 channels for sdot).
 *   NEON      nr=8,  kr=16: per block, per 16-deep slice s: for j in 0..7:
 *                           w[j][16s..16s+15]  (smull/smull2 + sadalp).
 * Depth and channels are zero-padded to multiples of kr and nr; zero weights
 * make whatever the kernels multiply them by irrelevant. */
typedef struct edged_packed_header {
  uint32_t magic;
  int32_t variant;
  int32_t out_c;
  int32_t depth;
  int32_t n_pad;
  int32_t k_pad;
  int32_t nr;
  int32_t kr;
  uint64_t term_offset;
  uint64_t weight_offset;
  uint64_t total_size;
  uint64_t reserved[2];
} edged_packed_header;

#define EDGED_PACKED_MAGIC 0x3853444Bu /* "KDS8" */

EDGED_INLINE const int32_t* edged_packed_terms(const void* packed) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  return (const int32_t*)((const char*)packed + h->term_offset);
}

EDGED_INLINE const int8_t* edged_packed_weights(const void* packed) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  return (const int8_t*)((const char*)packed + h->weight_offset);
}

/* Requantization parameters shared by every output tile. */
typedef struct edged_requant {
  const int32_t* multiplier; /* per output channel */
  const int32_t* shift;      /* per output channel, [-31, 30] */
  int32_t output_offset;
  int32_t act_min;
  int32_t act_max;
  /* 0: ties up in the final shift (what LiteRT's ruy does for FC/CONV on
   * x86); 1: gemmlowp's ties away from zero (TFLite's reference kernels). */
  int32_t rhaz;
  /* Nonzero: one rounding instead (edged_mbqm_single, LiteRT on aarch64);
   * overrides rhaz. Left out of an initializer, it is 0. */
  int32_t single_rounding;
} edged_requant;

/* A descriptor's per-channel requantization: its multipliers, shifts,
 * output offset and activation range, with the given rounding. */
EDGED_INLINE edged_requant edged_requant_of(const edged_op* op, int32_t rhaz, int32_t single_rounding) {
  const edged_requant rq = {op->out_multiplier, op->out_shift, op->output_offset, op->act_min, op->act_max,
                            rhaz, single_rounding};
  return rq;
}

/* Whether a FULLY_CONNECTED / CONV_2D descriptor's product of `rows`
 * activation rows (the whole batch) rounds once: mode EDGED_ROUND_SINGLE,
 * except where LiteRT's NEON matrix-times-vector kernel would take it (one
 * row, at least 4 output channels and 8 of depth), which rounds twice. */
EDGED_INLINE int32_t edged_rounds_once(const edged_op* op, int64_t rows, int64_t depth) {
  return op->mode == EDGED_ROUND_SINGLE && !(rows == 1 && op->out_c >= 4 && depth >= 8);
}

/* The EDGED_ROUND_* value an edged_requant asks for, for edged_requant1. */
EDGED_INLINE int edged_rq_mode(const edged_requant* rq) {
  return rq->single_rounding ? EDGED_ROUND_SINGLE : (rq->rhaz ? EDGED_ROUND_AWAY : EDGED_ROUND_UP);
}

/* c[r][o] = requant(term[o] + sum_d a[r][d] * w[o][d]) for r < m, o < out_c.
 * a rows are `a_stride` bytes apart, c rows `c_stride` bytes apart. The
 * packed buffer carries out_c and depth. */
typedef void (*edged_s8_gemm_fn)(size_t m, const int8_t* a, size_t a_stride,
                                 const void* packed, int8_t* c, size_t c_stride,
                                 const edged_requant* rq);

void edged_s8_gemm_ref(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                       int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_gemm_avx2(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_gemm_avx512vnni(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                              int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_gemm_neon(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_gemm_neondot(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                           int8_t* c, size_t c_stride, const edged_requant* rq);

/* The micro-kernel of a variant, or NULL when this build has none for it
 * (e.g. AVX2 on aarch64). Availability on this CPU: edged_cpu_variants(). */
edged_s8_gemm_fn edged_s8_gemm_get(int32_t variant);

/* Returns 0 when `packed` was produced by edged_s8_gemm_pack for exactly this
 * variant and shape. */
int edged_s8_gemm_check(const void* packed, int32_t variant, int32_t out_c, int32_t depth);

/* ------------------------------------------------------------------------ */
/* Packed block-sparse weights (s8_spmm family).                              */
/* ------------------------------------------------------------------------ */

/* A block-sparse buffer: this header, then (each at a 64-byte multiple)
 * row_ptr int32[n_block_rows + 1], the column indices (uint8 or uint16,
 * index_bytes each), two int32 term arrays of n_block_rows * block_rows
 * entries (bias + input_offset * rowsum, and the same minus 128 * rowsum for
 * kernels that feed activations as unsigned x + 128; zero on padding rows),
 * then the block values. The layout is the same for every variant. */
typedef struct edged_sparse_header {
  uint32_t magic;
  int32_t out_c;
  int32_t depth;
  int32_t block_rows;
  int32_t block_cols;
  int32_t n_block_rows;
  int32_t n_block_cols;
  int32_t index_bytes;
  int64_t nnz_blocks;
  uint64_t row_ptr_offset;
  uint64_t index_offset;
  uint64_t term_offset;
  uint64_t term_u8_offset;
  uint64_t value_offset;
  uint64_t total_size;
} edged_sparse_header;

#define EDGED_SPARSE_MAGIC 0x3850534Bu /* "KSP8" */
#define EDGED_SPARSE_MAX_BLOCK 64

EDGED_INLINE const int32_t* edged_sparse_row_ptr(const edged_sparse_header* h) {
  return (const int32_t*)((const char*)h + h->row_ptr_offset);
}
EDGED_INLINE const void* edged_sparse_indices(const edged_sparse_header* h) {
  return (const char*)h + h->index_offset;
}
EDGED_INLINE const int32_t* edged_sparse_terms(const edged_sparse_header* h) {
  return (const int32_t*)((const char*)h + h->term_offset);
}
EDGED_INLINE const int32_t* edged_sparse_terms_u8(const edged_sparse_header* h) {
  return (const int32_t*)((const char*)h + h->term_u8_offset);
}
EDGED_INLINE const int8_t* edged_sparse_values(const edged_sparse_header* h) {
  return (const int8_t*)((const char*)h + h->value_offset);
}
/* Column index k of the buffer, whatever its width. */
EDGED_INLINE size_t edged_sparse_col(const edged_sparse_header* h, size_t k) {
  return h->index_bytes == 1 ? ((const uint8_t*)edged_sparse_indices(h))[k]
                             : ((const uint16_t*)edged_sparse_indices(h))[k];
}

/* Same contract as edged_s8_gemm_fn, on a block-sparse buffer. Every variant
 * accepts every block shape: shapes without a SIMD path run the reference. */
typedef edged_s8_gemm_fn edged_s8_spmm_fn;

void edged_s8_spmm_ref(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                       int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_spmm_avx2(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_spmm_avx512vnni(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                              int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_spmm_neon(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq);
void edged_s8_spmm_neondot(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                           int8_t* c, size_t c_stride, const edged_requant* rq);

/* The block-sparse kernel of a variant, or NULL when this build has none. */
edged_s8_spmm_fn edged_s8_spmm_get(int32_t variant);

/* Returns 0 when `packed` is a block-sparse buffer for exactly (out_c, depth). */
int edged_s8_spmm_check(const void* packed, int32_t out_c, int32_t depth);

/* The matrix kernel a FULLY_CONNECTED / CONV_2D descriptor asks for. */
edged_s8_gemm_fn edged_matmul_get(const edged_op* op);

/* ------------------------------------------------------------------------ */
/* Operator entry points (one sample at a time unless noted); run.c has     */
/* already validated the descriptor.                                        */
/* ------------------------------------------------------------------------ */

void edged_fully_connected(const edged_op* op, int32_t batch);
void edged_conv_2d(const edged_op* op, int32_t batch);
size_t edged_conv_2d_scratch_size(const edged_op* op);
/* n bytes from src to dst. Up to 64 bytes as two fixed-size, possibly
 * overlapping copies of the largest power of two not above n: those compile
 * to plain moves, where a byte loop costs a branch per byte on the 3-channel
 * first layers and a library call costs more than the copy. Reads and writes
 * stay inside [src, src + n) and [dst, dst + n). */
EDGED_INLINE void edged_copy_bytes(int8_t* dst, const int8_t* src, size_t n) {
  if (n > 64) {
    memcpy(dst, src, n);
  } else if (n >= 32) {
    memcpy(dst, src, 32);
    memcpy(dst + n - 32, src + n - 32, 32);
  } else if (n >= 16) {
    memcpy(dst, src, 16);
    memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8) {
    memcpy(dst, src, 8);
    memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    memcpy(dst, src, 4);
    memcpy(dst + n - 4, src + n - 4, 4);
  } else if (n >= 2) {
    memcpy(dst, src, 2);
    memcpy(dst + n - 2, src + n - 2, 2);
  } else if (n == 1) {
    dst[0] = src[0];
  }
}

/* A pooling window clipped to the input: rows [y0, y1), columns [x0, x1). */
typedef struct {
  int32_t y0, y1, x0, x1;
} edged_window;

EDGED_INLINE edged_window edged_pool_window(const edged_op* op, int32_t oy, int32_t ox) {
  edged_window w;
  const int32_t iy = oy * op->stride_h - op->pad_top, ix = ox * op->stride_w - op->pad_left;
  w.y0 = iy < 0 ? 0 : iy;
  w.y1 = iy + op->filter_h < op->in_h ? iy + op->filter_h : op->in_h;
  w.x0 = ix < 0 ? 0 : ix;
  w.x1 = ix + op->filter_w < op->in_w ? ix + op->filter_w : op->in_w;
  return w;
}

/* The taps of a depthwise window at input corner (iy0, ix0) that fall inside
 * the input (padding contributes nothing): their input pixel offsets
 * (pixel * in_c) and filter tap indices, in filter order; returns how many. */
EDGED_INLINE size_t edged_dw_taps_inside(const edged_op* op, int32_t iy0, int32_t ix0, size_t* x_off, size_t* tap) {
  size_t n = 0;
  for (int32_t ky = 0; ky < op->filter_h; ++ky) {
    const int32_t iy = iy0 + ky * op->dilation_h;
    if (iy < 0 || iy >= op->in_h) continue;
    for (int32_t kx = 0; kx < op->filter_w; ++kx) {
      const int32_t ix = ix0 + kx * op->dilation_w;
      if (ix < 0 || ix >= op->in_w) continue;
      x_off[n] = ((size_t)iy * (size_t)op->in_w + (size_t)ix) * (size_t)op->in_c;
      tap[n] = (size_t)ky * (size_t)op->filter_w + (size_t)kx;
      ++n;
    }
  }
  return n;
}

/* AVERAGE_POOL_2D's (a +- count/2) / count with C's truncating division
 * (round half away from zero), given half = count / 2 and inv = 1.0 / count.
 * An integer division per output was most of that op's time; the reciprocal
 * gives the same quotient: for n = |a| + half >= 0 with n / count = k + f
 * (f = 0 or 1/count <= f <= 1 - 1/count, k <= 128 as |a| <= 128 * count),
 * n * inv is within k * 2^-51 of n / count, so adding 2^-30 lifts an exact k
 * that came out just below it and, with count < 2^29, moves no fraction past
 * the next integer. */
EDGED_INLINE int32_t edged_rounded_average(int32_t a, int32_t half, double inv) {
  const double n = a >= 0 ? (double)a + half : (double)half - (double)a;
  const int32_t q = (int32_t)(n * inv + 0x1p-30);
  return a >= 0 ? q : -q;
}

/* Rows (or columns) of input, padding included, that the windows of `out`
 * outputs touch: the extent of an explicitly padded copy. Each argument
 * positive; the result stays below 2^63. */
EDGED_INLINE size_t edged_padded_extent(int32_t out, int32_t stride, int32_t filter, int32_t dilation) {
  return (size_t)(out - 1) * (size_t)stride + (size_t)(filter - 1) * (size_t)dilation + 1;
}

/* The columns [*c0, *c1) of a padded row `width` columns wide (column 0 is
 * input column -pad_left) that hold input; *c1 <= *c0 when none do. */
EDGED_INLINE void edged_input_columns(int32_t pad_left, int32_t in_w, size_t width, int64_t* c0, int64_t* c1) {
  *c0 = pad_left > 0 ? pad_left : 0;
  *c1 = (int64_t)pad_left + in_w;
  if (*c1 > (int64_t)width) *c1 = (int64_t)width;
}

/* CONV_2D read in place with dense AVX-512 VNNI weights (x86-64 only): the
 * scratch bytes one sample needs, 0 when the kernel does not take the shape
 * (in_c % 4 != 0, more than 64 taps); and the op on one sample, x its input
 * and y its output, with `scratch` holding that many bytes. */
size_t edged_s8_conv_avx512vnni_scratch(const edged_op* op);
void edged_s8_conv_avx512vnni(const edged_op* op, const int8_t* x, void* scratch, int8_t* y,
                              const edged_requant* rq);
void edged_depthwise_conv_2d(const edged_op* op, int32_t batch);
/* Scratch bytes of a DEPTHWISE_CONV_2D descriptor (the same for every CPU). */
size_t edged_depthwise_conv_2d_scratch_size(const edged_op* op);
/* Portable depthwise for channels [c_begin, c_end) of one output pixel of
 * one sample (x, yp: that sample's input and that pixel's output). */
void edged_dw_pixel(const edged_op* op, const int8_t* x, int8_t* yp, int32_t oy, int32_t ox,
                    size_t c_begin, size_t c_end);
/* AVX2 depthwise; returns -1 (having done nothing) for shapes it does not
 * handle (more than 64 taps). */
int edged_s8_dwconv_avx2(const edged_op* op, int32_t batch);
/* AVX-512 VNNI depthwise at depth multiplier 1 (s8_dwconv_avx512.c): the
 * scratch bytes it needs, 0 for shapes it does not take; and the whole op,
 * with op->scratch holding that many bytes. */
size_t edged_s8_dwconv_avx512_scratch(const edged_op* op);
void edged_s8_dwconv_avx512(const edged_op* op, int32_t batch);
int edged_s8_dwconv_taps_avx512_fits(const edged_op* op);
void edged_s8_dwconv_taps_avx512(const edged_op* op, int32_t batch);
/* AVX2 ADD body: elements [0, body) of flat same-shape operands, 8 at a
 * time; returns how many it wrote (a multiple of 8, at most body). */
size_t edged_s8_vadd_avx2(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y, size_t body);
/* y[i] = int8(MultiplyByQuantizedMultiplier(acc[i] + centre) + output_offset),
 * rounding ties up or (ties_away) away from zero, for i in [0, return
 * value): 8 at a time with AVX2 (16 with AVX-512), at most n. */
size_t edged_s8_requant_uniform_avx2(const int32_t* acc, size_t n, int32_t centre, int32_t multiplier,
                                     int32_t shift, int32_t output_offset, int ties_away, int8_t* y);
size_t edged_s8_requant_uniform_avx512(const int32_t* acc, size_t n, int32_t centre, int32_t multiplier,
                                       int32_t shift, int32_t output_offset, int ties_away, int8_t* y);
/* REQUANTIZE's body with AVX2: y[i] = int8(MultiplyByQuantizedMultiplier(x[i]
 * + input_offset), ties up) + output_offset) for i in [0, return value), 8
 * at a time, at most n. */
size_t edged_s8_requant_bytes_avx2(const int8_t* x, size_t n, int32_t input_offset, int32_t multiplier,
                                   int32_t shift, int32_t output_offset, int8_t* y);
/* AVX-512 (F + BW) and NEON (aarch64) ADD bodies: the same contract, 16 at a time. */
size_t edged_s8_vadd_avx512(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y, size_t body);
size_t edged_s8_vadd_neon(const edged_op* op, const int8_t* x0, const int8_t* x1, int8_t* y, size_t body);
/* MAX_POOL_2D with AVX2, the whole op (any channel count). */
void edged_s8_maxpool_avx2(const edged_op* op, int32_t batch);
void edged_s8_avgpool_avx2(const edged_op* op, int32_t batch);
void edged_max_pool_2d(const edged_op* op, int32_t batch);
void edged_average_pool_2d(const edged_op* op, int32_t batch);
void edged_mean(const edged_op* op, int32_t batch);
void edged_add(const edged_op* op, int32_t batch);
void edged_softmax(const edged_op* op, int32_t batch);
void edged_logistic(const edged_op* op, int32_t batch);
void edged_hard_swish(const edged_op* op, int32_t batch);
void edged_relu(const edged_op* op, int32_t batch);
void edged_leaky_relu(const edged_op* op, int32_t batch);
void edged_prelu(const edged_op* op, int32_t batch);
void edged_resize(const edged_op* op, int32_t batch);
void edged_strided_view(const edged_op* op, int32_t batch);
void edged_squared_difference(const edged_op* op, int32_t batch);
void edged_batch_matmul(const edged_op* op, int32_t batch);
/* Whether a STRIDED_VIEW descriptor stays inside its input and output. */
int edged_strided_view_valid(const edged_op* op);
void edged_maximum_minimum(const edged_op* op, int32_t batch);
void edged_mul(const edged_op* op, int32_t batch);
int edged_mul_valid(const edged_op* op);
/* broadcast.c: LiteRT's broadcast classification of a MUL / ADD descriptor's
 * operands at `batch` (0 equal shapes, 1 fivefold, -1 generic), and whether
 * its shapes and strides are consistent and never generic. */
#define EDGED_BCAST_MAX_RANK 6
int32_t edged_bcast_pattern(const edged_op* op, int32_t batch, int64_t y[5], int* swap);
int edged_bcast_valid(const edged_op* op);
/* Runs `run` over the runs of contiguous output LiteRT's flat or fivefold
 * loops make: n elements, operand a (element i at a[i * step_a]; step 0 is a
 * scalar broadcast) against b; swapped says a is operand 1. */
typedef void (*edged_bcast_run_fn)(const edged_op* op, int64_t n, const int8_t* a, int64_t step_a,
                                   const int8_t* b, int8_t* out, int swapped);
void edged_bcast_run(const edged_op* op, int32_t batch, edged_bcast_run_fn run);
/* The same, for run functions whose output depends only on the two bytes and
 * on whether the position lies in the first n - n % 16 elements of the run
 * (MUL, ADD): long runs against one broadcast value go through a table. */
void edged_bcast_run_tabled(const edged_op* op, int32_t batch, edged_bcast_run_fn run);
void edged_quantize(const edged_op* op, int32_t batch);
void edged_requantize(const edged_op* op, int32_t batch);
void edged_dequantize(const edged_op* op, int32_t batch);
void edged_concatenation(const edged_op* op, int32_t batch);
void edged_pad(const edged_op* op, int32_t batch);
void edged_copy(const edged_op* op, int32_t batch);
void edged_hmatrix(const edged_op* op, int32_t batch);
/* Scratch bytes of an HMATRIX descriptor for `batch` samples (0 if its
 * geometry is invalid). */
size_t edged_hmatrix_scratch_size(const edged_op* op, int32_t batch);

#endif /* EDGED_INTERNAL_H */
