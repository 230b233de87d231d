/* edged native kernels: int8 operators with TFLite integer semantics.
 *
 * The Python planner (edged/runtime/plan.py) does every float computation once
 * (multipliers, shifts, zero points, clamp ranges, lookup tables) and fills an
 * array of edged_op descriptors; edged_run() then executes the whole graph in
 * one call, integer-only on the hot path. This header is the whole contract
 * between the two sides and is parsed by cffi (kernels/build_ffi.py), so it
 * holds plain declarations only.
 */
#ifndef EDGED_KERNELS_H
#define EDGED_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Operator kinds. */
enum {
  EDGED_OP_FULLY_CONNECTED = 1,
  EDGED_OP_CONV_2D = 2,
  EDGED_OP_DEPTHWISE_CONV_2D = 3,
  EDGED_OP_MAX_POOL_2D = 4,
  EDGED_OP_AVERAGE_POOL_2D = 5,
  EDGED_OP_MEAN = 6,
  EDGED_OP_ADD = 7,
  EDGED_OP_SOFTMAX = 8,
  EDGED_OP_LOGISTIC = 9,
  EDGED_OP_QUANTIZE = 10,   /* float32 -> int8 */
  EDGED_OP_REQUANTIZE = 11, /* int8 -> int8 (QUANTIZE between two int8 tensors) */
  EDGED_OP_DEQUANTIZE = 12, /* int8 -> float32 */
  EDGED_OP_CONCATENATION = 13,
  EDGED_OP_PAD = 14,
  EDGED_OP_COPY = 15,       /* RESHAPE when it cannot alias its input */
  EDGED_OP_HMATRIX = 16,    /* hierarchical-matrix FULLY_CONNECTED (edged's EDGED_HMATRIX op) */
  EDGED_OP_HARD_SWISH = 17,
  EDGED_OP_MUL = 18,
  EDGED_OP_RELU = 19,       /* RELU, RELU6, RELU_N1_TO_1 as ops of their own */
  EDGED_OP_MAXIMUM_MINIMUM = 20,
  EDGED_OP_LEAKY_RELU = 21,
  EDGED_OP_PRELU = 22,
  EDGED_OP_RESIZE = 23,      /* RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR */
  EDGED_OP_STRIDED_VIEW = 24, /* TRANSPOSE, SLICE, STRIDED_SLICE: an affine gather of int8 */
  EDGED_OP_SQUARED_DIFFERENCE = 25,
  EDGED_OP_BATCH_MATMUL = 26
};

/* RESIZE variants (edged_op.mode). */
enum {
  EDGED_RESIZE_NEAREST = 0,
  EDGED_RESIZE_BILINEAR = 1
};

/* MAXIMUM_MINIMUM variants (edged_op.mode). */
enum {
  EDGED_MAXIMUM = 0,
  EDGED_MINIMUM = 1
};

/* Kernel variants of the int8 GEMM family (s8_gemm_*). */
enum {
  EDGED_VARIANT_REF = 0,
  EDGED_VARIANT_AVX2 = 1,
  EDGED_VARIANT_AVX512VNNI = 2,
  EDGED_VARIANT_NEON = 3,
  EDGED_VARIANT_NEONDOT = 4,
  EDGED_VARIANT_COUNT = 5
};

/* Storage of FULLY_CONNECTED / CONV_2D weights (edged_op.weight_format). */
enum {
  EDGED_WEIGHTS_DENSE = 0,       /* packed by edged_s8_gemm_pack() */
  EDGED_WEIGHTS_BLOCK_SPARSE = 1 /* packed by edged_s8_spmm_pack() */
};

/* FULLY_CONNECTED / CONV_2D rounding (edged_op.mode). On x86-64 LiteRT's
 * dense int8 FC and CONV (ruy) round ties up in both steps of the fixed-point
 * multiply; its sparse int8 FC kernel (weights stored in TFLite's sparse
 * encoding) rounds them away from zero. Its aarch64 build rounds dense FC and
 * CONV once: (acc * multiplier + 2^(30 - shift)) >> (31 - shift) in 64 bits,
 * saturated to int32, except a product of one row (batch included) with
 * out_c >= 4 and depth >= 8, which its NEON matrix-times-vector kernel rounds
 * twice, ties up. DEPTHWISE_CONV_2D takes mode EDGED_ROUND_UP only. */
enum {
  EDGED_ROUND_UP = 0,
  EDGED_ROUND_AWAY = 1,
  EDGED_ROUND_SINGLE = 2
};

/* HARD_SWISH, SOFTMAX, DEQUANTIZE (edged_op.mode): the LiteRT build whose
 * arithmetic they reproduce. Its x86-64 build runs HARD_SWISH's scalar code,
 * the float-table SOFTMAX and DEQUANTIZE's multiply-then-add body; its
 * aarch64 build their NEON forms (see the per-op notes below). */
enum {
  EDGED_BODY_X86 = 0,
  EDGED_BODY_NEON = 1
};

/* MEAN variants (edged_op.mode), after LiteRT's two int8 MEAN paths. */
enum {
  EDGED_MEAN_REFERENCE = 0, /* reference_ops::QuantizedMeanOrSum: every case but the one below */
  EDGED_MEAN_OPTIMIZED = 1  /* optimized_integer_ops::Mean: NHWC, axes {1, 2}, keep_dims */
};

/* ADD variants (edged_op.mode): LiteRT's int8 ADD, or its int8 SUB (the
 * reference form throughout, operand 0 minus operand 1 or the reverse). */
enum {
  EDGED_ADD = 0,
  EDGED_SUB_SECOND = 1, /* in[0] - in[1] */
  EDGED_SUB_FIRST = 2   /* in[1] - in[0] */
};

/* One operator of an execution plan. Shapes are per sample (batch axis
 * excluded) in NHWC order with the batch dimension dropped: h, w, c. Every
 * pointer is owned by the Python plan and outlives the run. Each op processes
 * `batch` samples laid out contiguously: sample b of input k starts at
 * in[k] + b * in_stride[k] elements, of the output at out + b * out_stride. */
typedef struct edged_op {
  int32_t kind;
  int32_t variant;          /* EDGED_VARIANT_* for FULLY_CONNECTED / CONV_2D */

  const void* in[8];        /* inputs (int8 unless the op says otherwise) */
  int64_t in_stride[8];     /* elements per sample of each input */
  int32_t n_in;             /* number of inputs used (CONCATENATION: up to 8) */
  void* out;
  int64_t out_stride;

  /* Geometry. FULLY_CONNECTED: in_h = rows per sample, in_c = depth,
   * out_c = output units. Spatial ops: NHWC per sample. */
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t filter_h, filter_w;
  int32_t stride_h, stride_w;
  int32_t dilation_h, dilation_w;
  int32_t pad_top, pad_left;  /* SAME padding resolved at plan time */
  int32_t depth_multiplier;

  /* Weights: a buffer packed by edged_s8_gemm_pack() for `variant`
   * (FULLY_CONNECTED, CONV_2D), or raw [1, kh, kw, out_c] int8 (DEPTHWISE). */
  const void* weights;
  const int32_t* bias;      /* DEPTHWISE: raw int32 bias, may be NULL */

  /* Requantization: output = clamp(MultiplyByQuantizedMultiplier(acc, m, s) + out_zp).
   * Per output channel arrays (length out_c) for FC/CONV/DEPTHWISE. */
  const int32_t* out_multiplier;
  const int32_t* out_shift;
  int32_t input_offset;     /* -input_zero_point */
  int32_t output_offset;    /* output_zero_point */
  int32_t act_min, act_max; /* clamp range in the output's quantized domain */

  /* Elementwise ADD (TFLite's two-input rescaling) and int8->int8 rescaling
   * (REQUANTIZE, MEAN, CONCATENATION inputs). */
  int32_t left_shift;
  int32_t in_offset[8];     /* -zero_point of each input */
  int32_t in_multiplier[8];
  int32_t in_shift[8];
  int32_t multiplier;       /* single output multiplier */
  int32_t shift;

  /* CONCATENATION along the channel axis of a (outer, axis, inner) view:
   * input k contributes axis_size[k] slices of `inner` elements. */
  int32_t outer, inner;
  int32_t axis_size[8];

  /* PAD: before/after padding of the h, w, c axes; the fill value is output_offset. */
  int32_t pad_before[3], pad_after[3];

  /* MEAN: see the per-op notes below; `mode` is EDGED_MEAN_*. */
  int32_t mode;

  /* QUANTIZE / DEQUANTIZE. */
  float scale;              /* the tensor scale as TFLite stores it (float32) */
  int32_t zero_point;
  int64_t count;            /* elements per sample for elementwise ops */

  /* SOFTMAX: float table of 256 entries, see softmax.c; LOGISTIC: 256-entry
   * int8 table indexed by (uint8)(x). */
  const void* table;

  void* scratch;            /* per-plan scratch (CONV_2D im2col), sized by edged_scratch_size() */

  int32_t elem_size;        /* COPY: bytes per element (0 means 1) */

  int32_t weight_format;    /* FULLY_CONNECTED / CONV_2D / HMATRIX: EDGED_WEIGHTS_* */

  /* HMATRIX stage 1: mid_c int8 features computed from the input. */
  const void* mid_weights;  /* packed like `weights`, (mid_c, depth = in_c) */
  const int32_t* mid_multiplier; /* [mid_c] */
  const int32_t* mid_shift;      /* [mid_c] */
  int32_t mid_c;

  /* MUL, broadcasting ADD: operand k's shape padded with leading 1s to bcast_rank (<= 6) axes,
   * at batch 1; bcast_batched[k] says its leading extent is the batch (an
   * activation) rather than 1 (a constant). */
  int32_t bcast_rank;
  int32_t bcast_shape[2][6];
  int32_t bcast_batched[2];

  /* RESIZE: per output row (out_h entries) and column (out_w entries) the
   * input row / column (NEAREST), or (lo, hi, frac) triples (BILINEAR). */
  const int32_t* rows;
  const int32_t* cols;

  /* STRIDED_VIEW: per sample, output element (i_0 .. i_{r-1}) of a
   * view_rank-axis array of view_shape reads input element
   * view_start + sum_k i_k * view_stride[k] (strides may be negative). */
  int32_t view_rank;
  int32_t view_shape[6];
  int64_t view_stride[6];
  int64_t view_start;
} edged_op;

/* Fields each kind reads (everything else is ignored). "clamp" means the
 * result is clamped to [act_min, act_max], which must lie in [-128, 127];
 * "int8 clamp" means [-128, 127] regardless of act_min/act_max. Rounding
 * follows LiteRT's builtin x86-64 kernels: RHU = ties up (vector code, ruy),
 * RHAZ = ties away from zero (gemmlowp scalar code). "Flat index" counts
 * elements across the whole batch: sample b, element i is b*count + i, and
 * "body" means flat index < n - n % B for n = batch * count.
 *
 * FULLY_CONNECTED  in[0] rows of in_c int8 (in_h rows per sample), weights
 *   packed for (variant, out_c, depth = in_c) when weight_format is DENSE, or
 *   by edged_s8_spmm_pack for (out_c, depth) when BLOCK_SPARSE (any variant
 *   runs any block-sparse buffer), out_multiplier/out_shift[out_c],
 *   output_offset; clamp. Bias and input_offset are folded in at pack time.
 *   Rounding: mode EDGED_ROUND_UP (RHU, ruy) or EDGED_ROUND_AWAY (RHAZ,
 *   LiteRT's sparse FC kernel) or EDGED_ROUND_SINGLE (LiteRT on aarch64,
 *   above). No scratch.
 * CONV_2D  in[0] [in_h,in_w,in_c]; weights packed (dense or block-sparse, as
 *   FULLY_CONNECTED) from the [out_c,kh,kw,in_c] filter as
 *   [out_c, depth = filter_h*filter_w*in_c]; stride_*, dilation_*,
 *   pad_top/left; out [out_h,out_w,out_c]; input_offset (im2col fills padding
 *   with -input_offset), requant as FULLY_CONNECTED (mode EDGED_ROUND_UP or
 *   EDGED_ROUND_SINGLE; rows = out_h*out_w*batch). Scratch: edged_scratch_size().
 * DEPTHWISE_CONV_2D  in[0] [in_h,in_w,in_c], weights raw [kh,kw,out_c] int8,
 *   bias raw int32 or NULL, depth_multiplier (out_c = in_c*depth_multiplier),
 *   geometry as CONV_2D, input_offset, out_multiplier/out_shift, output_offset;
 *   clamp. Channels c < out_c - out_c % 8 RHU, the rest RHAZ (on aarch64
 *   too); mode EDGED_ROUND_UP.
 * MAX_POOL_2D / AVERAGE_POOL_2D  in[0] [in_h,in_w,in_c], out [out_h,out_w,out_c]
 *   with out_c == in_c, filter_*, stride_*, pad_top/left; clamp. Windows are
 *   clipped to the input; average rounds RHAZ over the valid taps.
 * MEAN  per sample a [outer, in_h*in_w, in_c] view (outer 0 means 1) reduced
 *   over its middle axis to [outer, in_c]. EDGED_MEAN_OPTIMIZED: out =
 *   MBQM(sum, multiplier, shift) + output_offset (the float-derived bias),
 *   channels c < in_c - in_c % 16 RHU, the rest RHAZ. EDGED_MEAN_REFERENCE:
 *   out = MBQM(sum + input_offset*in_h*in_w, multiplier, shift) + output_offset,
 *   RHAZ. int8 clamp.
 * ADD  in[0], in[1], out: `count` elements per sample, same shape; or, with
 *   bcast_rank set, broadcast as MUL below (a constant operand has in_stride
 *   0). left_shift (20), in_offset[0..1],
 *   in_multiplier[0..1], in_shift[0..1], multiplier, shift, output_offset;
 *   clamp. Body (B = 16): LiteRT's vector form; the rest: reference form.
 *   Broadcast runs against a single value: B = 8 and AddScalarBroadcast's form.
 *   mode EDGED_SUB_*: SUB, the reference form for every element, the
 *   subtracted operand's scaled value negated before the sum.
 * SOFTMAX  in[0] rows of in_c (the last axis), `count` elements per sample;
 *   scale = output scale; output_offset = output zero point; int8 clamp.
 *   mode EDGED_BODY_X86: table = float[256] from edged_softmax_table(),
 *   RHAZ (std::round) of each float probability. mode EDGED_BODY_NEON
 *   (SoftmaxInt8LUT): table = int32[256] of uint16 values from
 *   edged_softmax_uint16_table(); per row an int32 sum of the entries,
 *   QuantizeMultiplier(1.0f / ((float)sum * scale)), then each entry scaled
 *   by it: the first in_c - in_c % 16 of a row MBQM_RHU, the rest MBQM.
 * LOGISTIC  `count` elements; table = int8[256] from edged_logistic_table().
 *   TANH runs as this kind too, with its own table (LiteRT's LUT of tanhf).
 * QUANTIZE  in[0] float32, `count` elements; scale, zero_point (of the output).
 *   Body (B = 8): rint(x * (float)(1.0/scale)), tail: round((double)x/scale).
 * REQUANTIZE  `count` elements; input_offset, multiplier, shift,
 *   output_offset; body (B = 16) RHU, tail RHAZ; int8 clamp.
 * DEQUANTIZE  in[0] int8 -> out float32, `count` elements; scale, zero_point
 *   (of the input). Body (B = 8): (float)x*scale + (float)(-zp*(double)scale),
 *   rounded after the product and the sum (mode EDGED_BODY_X86) or once, a
 *   fused multiply-add (EDGED_BODY_NEON); tail: (float)((double)scale*(x - zp)).
 * CONCATENATION  n_in inputs; per sample a [outer, sum(axis_size), inner]
 *   output, input k is [outer, axis_size[k], inner]; bytes are copied (LiteRT
 *   requires equal quantization; in_offset/in_multiplier are unused).
 * PAD  in[0] [in_h,in_w,in_c] -> out [out_h,out_w,out_c], pad_before[3] /
 *   pad_after[3] of the h, w, c axes, fill value output_offset.
 * COPY  `count` elements of elem_size bytes.
 * HMATRIX  a FULLY_CONNECTED whose weight matrix is an H-matrix (low-rank and
 *   dense blocks), as two products through a scratch row u = [x | mid] of
 *   in_c + mid_c int8 per input row (in_h rows per sample, as FULLY_CONNECTED):
 *     mid[k] = clamp(MBQM_RHU(sum_d (x[d] - in_zp) * W1[k][d], mid_multiplier[k],
 *              mid_shift[k]), -128, 127)                      (zero point 0)
 *     y[o]   = requant(bias[o] + sum_d (x[d] - in_zp) * W2[o][d]
 *                              + sum_k mid[k] * W2[o][in_c + k])   (RHU)
 *   mid_weights holds W1 packed for (mid_c, in_c) with input_offset and no
 *   bias; weights holds W2 packed for (out_c, in_c + mid_c) with the same
 *   input_offset, so the caller folds in_zp * rowsum(W2[o][in_c:]) into its
 *   bias to cancel the offset on the mid columns. Both use weight_format and
 *   variant; out_multiplier/out_shift[out_c], output_offset; clamp.
 *   Scratch: edged_scratch_size().
 * HARD_SWISH  `count` elements; input_offset, output_offset; multiplier
 *   (Q15, 0..32767) and shift (<= 0) of the output; in_multiplier[0] (Q15)
 *   and in_shift[0] of the "reluish" factor. mode EDGED_BODY_X86: LiteRT's
 *   scalar int16 fixed point for every element (its x86 build has no vector
 *   body for it); EDGED_BODY_NEON: the first n - n % 8 elements of the flat
 *   tensor (batch included) in its NEON body's rounding (vqrdmulh, vrshl:
 *   ties up; vqdmulh: floor), the rest scalar. table: NULL, or the
 *   edged_hard_swish_table() of this op (256 entries; 512 in NEON mode, the
 *   body's then the tail's), looked up instead.
 * MUL  in[0], in[1] (a constant operand has in_stride 0), broadcast by
 *   bcast_rank/bcast_shape/bcast_batched; batched operands and the output
 *   are contiguous over the batch (stride = elements per sample).
 *   in_offset[0..1], multiplier, shift, output_offset; clamp. Runs as
 *   LiteRT's flat or fivefold loops; in each run of n elements the first
 *   n - n % 16 are vector form (RHAZ shift, int16 saturation, int16 offset
 *   add that wraps), the rest scalar (MBQM). Shapes that need LiteRT's
 *   generic broadcast are invalid.
 * MAXIMUM_MINIMUM  in[0], in[1] broadcast as MUL; mode EDGED_MAXIMUM or
 *   EDGED_MINIMUM of the raw int8 values.
 * RELU  `count` elements; input_offset, multiplier, shift (input scale /
 *   output scale, MBQM), output_offset; clamp (the activation's range).
 * LEAKY_RELU  `count` elements; v = x + input_offset; out = MBQM(v,
 *   in_multiplier[0], in_shift[0]) for v >= 0, MBQM(v, in_multiplier[1],
 *   in_shift[1]) (|alpha|) otherwise, negated when mode is 1 (a negative
 *   alpha), + output_offset; int8 clamp (RHAZ).
 * PRELU  `count` elements; weights = int8 alpha, `count` entries (the
 *   constant alpha broadcast to one sample); v = x + input_offset; out =
 *   MBQM(v, in_multiplier[0], in_shift[0]) for v >= 0, else MBQM(v * (alpha +
 *   in_offset[1]), in_multiplier[1], in_shift[1]); + output_offset; int8
 *   clamp (RHAZ).
 * RESIZE  in[0] [in_h,in_w,in_c] -> out [out_h,out_w,in_c] (out_c == in_c).
 *   EDGED_RESIZE_NEAREST: out[y][x] = in[rows[y]][cols[x]]. EDGED_RESIZE_BILINEAR
 *   (LiteRT's ResizeBilinearInteger, 10 fractional bits): rows[3y..3y+2] =
 *   (y0, y1, dy), cols likewise (x0, x1, dx); out = the int64 sum of the four
 *   taps weighted (1024 - dy or dy) * (1024 - dx or dx), divided by 2^20
 *   rounding half away from zero, cast to int8 (wrapping).
 * STRIDED_VIEW  copies view_shape's elements (int8) as described at the
 *   field; the output is contiguous.
 * SQUARED_DIFFERENCE  `count` elements of in[0] against in[1] (n_in 2, same
 *   shape) or a constant `weights` of `count` int8 (n_in 1). Operand k:
 *   s_k = MBQM((v + in_offset[k]) << left_shift, in_multiplier[k],
 *   in_shift[k]); out = MBQM((s_0 - s_1)^2 (int32, wrapping), multiplier,
 *   shift) + output_offset; int8 clamp (RHAZ).
 * BATCH_MATMUL  per sample `outer` (>= 1) products of an [in_h = M, in_c = K]
 *   matrix from in[0] (element (i, d) at i * view_stride[0] + d *
 *   view_stride[1], M * K per matrix) and a [K, out_c = P] matrix from in[1]
 *   (n_in 2) or the constant `weights` (n_in 1; `outer` matrices, not per
 *   sample), element (d, j) at d * view_stride[2] + j * view_stride[3], K * P
 *   per matrix; out [M, P] row-major per matrix. out = MBQM(sum_d (x +
 *   input_offset) * (z + in_offset[1]) (int32, wrapping), multiplier, shift)
 *   + output_offset; int8 clamp (RHAZ).
 */

/* CPU features detected at run time; a bit per EDGED_VARIANT_*. */
uint32_t edged_cpu_variants(void);

/* int8 GEMM family: out[r][o] = requant(sum_d (x[r][d] - in_zp) * w[o][d] + bias[o]).
 * Packing folds the input zero point and bias into the packed buffer, which
 * starts with a small header (variant, out_c, depth) that edged_run checks.
 * w is [out_c, depth] row-major; bias may be NULL. packed_size returns 0 and
 * pack returns -1 for an unknown variant or a non-positive shape; packing
 * works for any variant on any CPU (running needs edged_cpu_variants()). */
size_t edged_s8_gemm_packed_size(int32_t variant, int32_t out_c, int32_t depth);
int32_t edged_s8_gemm_pack(int32_t variant, const int8_t* w, const int32_t* bias,
                           int32_t input_offset, int32_t out_c, int32_t depth, void* packed);

/* Block-sparse int8 GEMM family (s8_spmm_*): the same product as s8_gemm for
 * a weight matrix stored in block-CSR form. The matrix is cut into blocks of
 * block_rows output channels x block_cols consecutive depth steps; block row
 * i holds the blocks row_ptr[i] .. row_ptr[i+1]-1, block k sits at depth
 * col_idx[k] * block_cols and its values are values[k*block_rows*block_cols
 * ...] row-major (channel, then depth). Block columns of a block row are
 * strictly increasing; rows at or past out_c and depth at or past `depth`
 * (the ragged edge blocks) must hold zeros. The packed buffer stores column
 * indices as uint8 when there are at most 256 block columns, else uint16,
 * plus the folded bias/zero-point terms, so the kernels do no zero-point work.
 * Blocks are at most 64 x 64. The buffer is the same for every variant.
 * pack returns 0, or: -1 bad shape or block, -2 bad row_ptr, -3 a column
 * index out of range or not increasing, -4 a nonzero in the ragged edge. */
size_t edged_s8_spmm_packed_size(int32_t out_c, int32_t depth, int32_t block_rows,
                                 int32_t block_cols, int64_t nnz_blocks);
int32_t edged_s8_spmm_pack(int32_t out_c, int32_t depth, int32_t block_rows, int32_t block_cols,
                           const int32_t* row_ptr, const int32_t* col_idx, int64_t nnz_blocks,
                           const int8_t* values, const int32_t* bias, int32_t input_offset,
                           void* packed);

/* SOFTMAX / LOGISTIC lookup tables exactly as LiteRT's Prepare builds them,
 * with this library's libm expf. softmax: table[255 - v] = expf(-input_scale
 * * beta * v) for v in 0..255. logistic: table[(uint8)q] for q in -128..127,
 * LUTPopulate of 1 / (1 + expf(-x)). */
void edged_softmax_table(float input_scale, float beta, float* table);
/* SoftmaxInt8LUT's table (LiteRT's aarch64 build): table[v] =
 * min(65535, (int32)(expf(input_scale * beta * (v - 255)) * 65535 + 0.5)). */
void edged_softmax_uint16_table(float input_scale, float beta, int32_t* table);
void edged_logistic_table(float input_scale, int32_t input_zero_point, float output_scale,
                          int32_t output_zero_point, int8_t* table);

/* HARD_SWISH of every byte q (table[(uint8)q]) for an op's parameters; in
 * mode EDGED_BODY_NEON 512 entries: the NEON body's, then the scalar tail's. */
void edged_hard_swish_table(const edged_op* op, int8_t* table);

/* Scratch bytes an op needs for a batch of `batch` samples. */
size_t edged_scratch_size(const edged_op* op, int32_t batch);

/* Run `n_ops` operators in order on `batch` samples. Returns 0, or the
 * 1-based index of the first op whose descriptor is invalid (checked before
 * anything runs, so nothing is written then). Ops run in order, so an op may
 * read what an earlier one wrote. */
int32_t edged_run(const edged_op* ops, int32_t n_ops, int32_t batch);

/* The check edged_run does first, alone: 0, or the 1-based index of the
 * first invalid descriptor. The planner calls it once when a model loads. */
int32_t edged_validate(const edged_op* ops, int32_t n_ops, int32_t batch);

/* Run `n_ops` operators that edged_validate has accepted, without checking
 * them again: the per-call form for a planner that validated its plan once
 * and never changes the descriptors, or the packed weights and per-channel
 * arrays they point to, afterwards. Returns 0, or -1 for no descriptors or a
 * batch below 1. Anything else unvalidated may read or write out of bounds:
 * callers that cannot promise this use edged_run. */
int32_t edged_execute(const edged_op* ops, int32_t n_ops, int32_t batch);

/* edged_run, with the plan validated once and then executed `reps` times:
 * for measuring a plan (the autotuner, benchmarks) without per-call overhead. */
int32_t edged_run_repeat(const edged_op* ops, int32_t n_ops, int32_t batch, int32_t reps);

#endif /* EDGED_KERNELS_H */
