/* edged_run: validate a whole plan, then execute it op by op
 * (edged_execute: a plan validated once before, executed only).
 *
 * Validation is O(channels) per op at most, never O(data): it exists so that
 * a planner bug surfaces as "op #k is invalid" in Python instead of a crash
 * or an out-of-bounds write in C. Everything is checked before anything
 * runs, so a rejected plan has written nothing.
 *
 * The extent checks (extent_ok) are what keeps a kernel inside its buffers:
 * per sample, every element an op reads from input k lies below
 * in_stride[k] and every element it writes below out_stride, whatever the
 * geometry fields say. Sizes are multiplied saturating, so no field values
 * can wrap a product into a small number. */
#include <math.h>

#include "internal.h"

static int pos(int32_t v) { return v >= 1; }

/* a * b for sizes; a negative factor or an overflow gives INT64_MAX (never fits). */
static int64_t smul(int64_t a, int64_t b) {
  if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) return INT64_MAX;
  return a * b;
}

static int64_t volume(int64_t a, int64_t b, int64_t c) { return smul(smul(a, b), c); }

/* Per sample, input 0 holds at least `in` elements and the output `out`. */
static int extent_ok(const edged_op* op, int64_t in, int64_t out) {
  return in <= op->in_stride[0] && out <= op->out_stride;
}

static int spatial_extent_ok(const edged_op* op) {
  return extent_ok(op, volume(op->in_h, op->in_w, op->in_c), volume(op->out_h, op->out_w, op->out_c));
}

/* Every window coordinate a kernel computes, o * stride - pad + k * dilation
 * (and its end, + filter), fits int32. */
static int window_fits(int32_t out, int32_t stride, int32_t filter, int32_t dilation, int32_t pad) {
  return pad >= 0 && (int64_t)(out - 1) * stride + (int64_t)(filter - 1) * dilation + filter <= INT32_MAX;
}

static int windows_fit(const edged_op* op, int32_t dilation_h, int32_t dilation_w) {
  return window_fits(op->out_h, op->stride_h, op->filter_h, dilation_h, op->pad_top) &&
         window_fits(op->out_w, op->stride_w, op->filter_w, dilation_w, op->pad_left);
}

static int act_ok(const edged_op* op) {
  return op->act_min >= -128 && op->act_max <= 127 && op->act_min <= op->act_max;
}

static int shift_ok(int32_t s) { return s >= -31 && s <= 30; }

static int per_channel_ok(const edged_op* op) {
  if (op->out_multiplier == NULL || op->out_shift == NULL) return 0;
  for (int32_t c = 0; c < op->out_c; ++c)
    if (!shift_ok(op->out_shift[c])) return 0;
  return 1;
}

static int strides_ok(const edged_op* op, int32_t n_inputs) {
  if (op->out == NULL || op->out_stride < 0) return 0;
  for (int32_t k = 0; k < n_inputs; ++k)
    if (op->in[k] == NULL || op->in_stride[k] < 0) return 0;
  return 1;
}

/* Input zero point usable as an int8 fill value (im2col padding). */
static int input_offset_ok(const edged_op* op) {
  return op->input_offset >= -127 && op->input_offset <= 128;
}

/* CONV_2D: x86 rounding (0) or a single rounding. */
static int conv_rounding_ok(const edged_op* op) {
  return op->mode == EDGED_ROUND_UP || op->mode == EDGED_ROUND_SINGLE;
}

static int spatial_ok(const edged_op* op) {
  return pos(op->in_h) && pos(op->in_w) && pos(op->in_c) && pos(op->out_h) && pos(op->out_w) &&
         pos(op->out_c) && pos(op->filter_h) && pos(op->filter_w) && pos(op->stride_h) &&
         pos(op->stride_w);
}

/* `weights` is a buffer in the descriptor's format for (out_c, depth), and
 * the descriptor's variant can run it here. */
static int packed_ok(const edged_op* op, const void* weights, int32_t out_c, int32_t depth) {
  if (op->variant < 0 || op->variant >= EDGED_VARIANT_COUNT) return 0;
  if (!(edged_cpu_variants() & (1u << op->variant)) || edged_matmul_get(op) == NULL) return 0;
  switch (op->weight_format) {
    case EDGED_WEIGHTS_DENSE:
      return edged_s8_gemm_check(weights, op->variant, out_c, depth) == 0;
    case EDGED_WEIGHTS_BLOCK_SPARSE:
      return edged_s8_spmm_check(weights, out_c, depth) == 0;
    default:
      return 0;
  }
}

static int gemm_ok(const edged_op* op, int32_t depth) {
  return packed_ok(op, op->weights, op->out_c, depth);
}

static int hmatrix_ok(const edged_op* op) {
  if (!strides_ok(op, 1) || !pos(op->in_h) || !pos(op->in_c) || !pos(op->out_c) || !pos(op->mid_c) ||
      (int64_t)op->in_c + op->mid_c > INT32_MAX || !act_ok(op) ||
      !extent_ok(op, smul(op->in_h, op->in_c), smul(op->in_h, op->out_c)))
    return 0;
  /* The packed headers first: they prove out_c and mid_c, so the
   * per-channel arrays can then be read. */
  if (!gemm_ok(op, op->in_c + op->mid_c) || !packed_ok(op, op->mid_weights, op->mid_c, op->in_c))
    return 0;
  if (!per_channel_ok(op) || op->mid_multiplier == NULL || op->mid_shift == NULL) return 0;
  for (int32_t k = 0; k < op->mid_c; ++k)
    if (!shift_ok(op->mid_shift[k])) return 0;
  return op->scratch != NULL;
}

/* Every pooling window must hold at least one input pixel (TFLite fails the
 * op otherwise). Window origins grow with the output index, so checking the
 * first and the last window of each axis covers all of them. */
static int windows_ok(int32_t in, int32_t out, int32_t filter, int32_t stride, int32_t pad) {
  const int64_t first = -(int64_t)pad, last = (int64_t)(out - 1) * stride - pad;
  return first + filter > 0 && first < in && last + filter > 0 && last < in;
}

/* LEAKY_RELU / PRELU: the two rescalings, [0] non-negative side, [1] negative side. */
static int two_sided_ok(const edged_op* op) {
  return strides_ok(op, 1) && op->count >= 0 && extent_ok(op, op->count, op->count) &&
         shift_ok(op->in_shift[0]) && shift_ok(op->in_shift[1]) && input_offset_ok(op);
}

/* RESIZE: every row and column maps into the input; bilinear weights stay
 * small enough for the int64 blend. O(out_h + out_w). */
static int resize_axis_ok(const int32_t* map, int32_t out, int32_t in, int32_t mode) {
  if (map == NULL) return 0;
  const int32_t width = mode == EDGED_RESIZE_BILINEAR ? 3 : 1;
  for (int32_t i = 0; i < out; ++i) {
    const int32_t* m = map + (size_t)i * width;
    if (m[0] < 0 || m[0] >= in) return 0;
    if (width == 3 && (m[1] < 0 || m[1] >= in || m[2] < -(1 << 20) || m[2] > (1 << 20))) return 0;
  }
  return 1;
}

static int resize_ok(const edged_op* op) {
  if (!strides_ok(op, 1) || !pos(op->in_h) || !pos(op->in_w) || !pos(op->in_c) || !pos(op->out_h) ||
      !pos(op->out_w) || op->out_c != op->in_c || !spatial_extent_ok(op))
    return 0;
  if (op->mode != EDGED_RESIZE_NEAREST && op->mode != EDGED_RESIZE_BILINEAR) return 0;
  return resize_axis_ok(op->rows, op->out_h, op->in_h, op->mode) &&
         resize_axis_ok(op->cols, op->out_w, op->in_w, op->mode);
}

/* A matrix of rows x cols whose element (r, c) sits at r * row_step + c * col_step
 * stays inside its rows * cols elements. */
static int matrix_ok(int32_t rows, int32_t cols, int64_t row_step, int64_t col_step) {
  if (row_step < 0 || col_step < 0 || row_step > INT32_MAX || col_step > INT32_MAX) return 0;
  return (int64_t)(rows - 1) * row_step + (int64_t)(cols - 1) * col_step < (int64_t)rows * cols;
}

static int batch_matmul_ok(const edged_op* op) {
  if (op->n_in == 2 ? !strides_ok(op, 2) : op->n_in != 1 || !strides_ok(op, 1) || op->weights == NULL)
    return 0;
  if (!pos(op->outer) || !pos(op->in_h) || !pos(op->in_c) || !pos(op->out_c)) return 0;
  if (!matrix_ok(op->in_h, op->in_c, op->view_stride[0], op->view_stride[1]) ||
      !matrix_ok(op->in_c, op->out_c, op->view_stride[2], op->view_stride[3]))
    return 0;
  if (op->n_in == 2 && volume(op->outer, op->in_c, op->out_c) > op->in_stride[1]) return 0;
  return extent_ok(op, volume(op->outer, op->in_h, op->in_c), volume(op->outer, op->in_h, op->out_c)) &&
         shift_ok(op->shift) && op->input_offset >= -127 && op->input_offset <= 128 &&
         op->in_offset[1] >= -127 && op->in_offset[1] <= 128;
}

static int body_mode_ok(const edged_op* op) {
  return op->mode == EDGED_BODY_X86 || op->mode == EDGED_BODY_NEON;
}

static int valid(const edged_op* op) {
  switch (op->kind) {
    case EDGED_OP_FULLY_CONNECTED:
      return strides_ok(op, 1) && pos(op->in_h) && pos(op->in_c) && pos(op->out_c) &&
             extent_ok(op, smul(op->in_h, op->in_c), smul(op->in_h, op->out_c)) &&
             act_ok(op) && gemm_ok(op, op->in_c) && per_channel_ok(op) &&
             (op->mode == EDGED_ROUND_UP || op->mode == EDGED_ROUND_AWAY || op->mode == EDGED_ROUND_SINGLE);
    case EDGED_OP_CONV_2D: {
      if (!strides_ok(op, 1) || !spatial_ok(op) || !pos(op->dilation_h) || !pos(op->dilation_w) ||
          !spatial_extent_ok(op) || !windows_fit(op, op->dilation_h, op->dilation_w))
        return 0;
      const int64_t depth = (int64_t)op->filter_h * op->filter_w * op->in_c;
      /* The packed header first: it proves out_c, so the per-channel arrays
       * can then be read. */
      if (depth > INT32_MAX || !act_ok(op) || !input_offset_ok(op) || !conv_rounding_ok(op)) return 0;
      if (!gemm_ok(op, (int32_t)depth) || !per_channel_ok(op)) return 0;
      return edged_conv_2d_scratch_size(op) == 0 || op->scratch != NULL;
    }
    case EDGED_OP_DEPTHWISE_CONV_2D:
      return strides_ok(op, 1) && spatial_ok(op) && pos(op->dilation_h) && pos(op->dilation_w) &&
             spatial_extent_ok(op) && windows_fit(op, op->dilation_h, op->dilation_w) &&
             pos(op->depth_multiplier) && (int64_t)op->in_c * op->depth_multiplier == op->out_c &&
             op->weights != NULL && act_ok(op) && per_channel_ok(op) && input_offset_ok(op) &&
             op->mode == EDGED_ROUND_UP;
    case EDGED_OP_MAX_POOL_2D:
    case EDGED_OP_AVERAGE_POOL_2D:
      return strides_ok(op, 1) && spatial_ok(op) && op->in_c == op->out_c && act_ok(op) &&
             spatial_extent_ok(op) && windows_fit(op, 1, 1) &&
             (int64_t)op->filter_h * op->filter_w <= (1 << 23) &&
             windows_ok(op->in_h, op->out_h, op->filter_h, op->stride_h, op->pad_top) &&
             windows_ok(op->in_w, op->out_w, op->filter_w, op->stride_w, op->pad_left);
    case EDGED_OP_MEAN:
      return strides_ok(op, 1) && pos(op->in_h) && pos(op->in_w) && pos(op->in_c) &&
             op->outer >= 0 && (int64_t)op->in_h * op->in_w <= (1 << 23) &&
             extent_ok(op, volume(op->outer > 0 ? op->outer : 1, (int64_t)op->in_h * op->in_w, op->in_c),
                       smul(op->outer > 0 ? op->outer : 1, op->in_c)) &&
             (op->mode == EDGED_MEAN_REFERENCE || op->mode == EDGED_MEAN_OPTIMIZED) &&
             shift_ok(op->shift);
    case EDGED_OP_ADD:
      /* A broadcast proves its extents in edged_bcast_valid; two equal shapes by count. */
      return op->count >= 1 && act_ok(op) && op->left_shift >= 0 &&
             (op->bcast_rank != 0 || (strides_ok(op, 2) && extent_ok(op, op->count, op->count) &&
                                      op->count <= op->in_stride[1])) &&
             op->left_shift <= 30 && op->shift <= 0 && op->shift >= -31 && op->in_shift[0] <= 0 &&
             op->in_shift[0] >= -31 && op->in_shift[1] <= 0 && op->in_shift[1] >= -31 &&
             (op->mode == EDGED_ADD || op->mode == EDGED_SUB_SECOND || op->mode == EDGED_SUB_FIRST) &&
             (op->bcast_rank == 0 || edged_bcast_valid(op));
    case EDGED_OP_SOFTMAX:
      return strides_ok(op, 1) && op->table != NULL && pos(op->in_c) && op->count >= 1 &&
             op->count % op->in_c == 0 && extent_ok(op, op->count, op->count) && body_mode_ok(op);
    case EDGED_OP_LOGISTIC:
      return strides_ok(op, 1) && op->table != NULL && op->count >= 0 && extent_ok(op, op->count, op->count);
    case EDGED_OP_QUANTIZE:
      return strides_ok(op, 1) && op->count >= 0 && op->scale > 0.0f && isfinite(op->scale) &&
             extent_ok(op, op->count, op->count) &&
             op->zero_point >= -128 && op->zero_point <= 127;
    case EDGED_OP_REQUANTIZE:
      return strides_ok(op, 1) && op->count >= 0 && shift_ok(op->shift) &&
             extent_ok(op, op->count, op->count);
    case EDGED_OP_DEQUANTIZE:
      return strides_ok(op, 1) && op->count >= 0 && extent_ok(op, op->count, op->count) &&
             body_mode_ok(op);
    case EDGED_OP_CONCATENATION: {
      if (op->n_in < 1 || op->n_in > 8 || op->outer < 0 || op->inner < 1) return 0;
      const int64_t outer = op->outer > 0 ? op->outer : 1; /* the kernel runs outer 0 as 1 */
      int64_t total = 0;
      for (int32_t k = 0; k < op->n_in; ++k) {
        if (op->axis_size[k] < 0 || volume(outer, op->axis_size[k], op->inner) > op->in_stride[k])
          return 0;
        total += op->axis_size[k]; /* at most 8 * INT32_MAX: no overflow */
      }
      return strides_ok(op, op->n_in) && volume(outer, total, op->inner) <= op->out_stride;
    }
    case EDGED_OP_PAD:
      for (int k = 0; k < 3; ++k)
        if (op->pad_before[k] < 0 || op->pad_after[k] < 0) return 0;
      return strides_ok(op, 1) && pos(op->in_h) && pos(op->in_w) && pos(op->in_c) &&
             (int64_t)op->in_h + op->pad_before[0] + op->pad_after[0] == op->out_h &&
             (int64_t)op->in_w + op->pad_before[1] + op->pad_after[1] == op->out_w &&
             (int64_t)op->in_c + op->pad_before[2] + op->pad_after[2] == op->out_c &&
             spatial_extent_ok(op) &&
             op->output_offset >= -128 && op->output_offset <= 127;
    case EDGED_OP_COPY:
      return strides_ok(op, 1) && op->count >= 0 && op->elem_size >= 0 && op->elem_size <= 64 &&
             extent_ok(op, op->count, op->count);
    case EDGED_OP_HMATRIX:
      return hmatrix_ok(op);
    case EDGED_OP_HARD_SWISH:
      return strides_ok(op, 1) && op->count >= 0 && extent_ok(op, op->count, op->count) &&
             op->shift <= 0 && op->shift >= -31 &&
             op->in_shift[0] >= -31 && op->in_shift[0] <= 30 && op->multiplier >= 0 &&
             op->multiplier <= INT16_MAX && op->in_multiplier[0] >= 0 &&
             op->in_multiplier[0] <= INT16_MAX && input_offset_ok(op) && body_mode_ok(op);
    case EDGED_OP_MUL:
      return edged_mul_valid(op);
    case EDGED_OP_MAXIMUM_MINIMUM:
      return (op->mode == EDGED_MAXIMUM || op->mode == EDGED_MINIMUM) && edged_bcast_valid(op);
    case EDGED_OP_RELU:
      return strides_ok(op, 1) && op->count >= 0 && extent_ok(op, op->count, op->count) && act_ok(op) &&
             shift_ok(op->shift) && op->multiplier >= 0 && input_offset_ok(op);
    case EDGED_OP_LEAKY_RELU:
      return two_sided_ok(op) && (op->mode == 0 || op->mode == 1) && op->in_multiplier[1] >= 0;
    case EDGED_OP_PRELU:
      return two_sided_ok(op) && op->weights != NULL && op->in_offset[1] >= -127 && op->in_offset[1] <= 128;
    case EDGED_OP_RESIZE:
      return resize_ok(op);
    case EDGED_OP_STRIDED_VIEW:
      return edged_strided_view_valid(op);
    case EDGED_OP_BATCH_MATMUL:
      return batch_matmul_ok(op);
    case EDGED_OP_SQUARED_DIFFERENCE:
      if (op->n_in == 2 ? !strides_ok(op, 2) || op->count > op->in_stride[1]
                        : op->n_in != 1 || !strides_ok(op, 1) || op->weights == NULL)
        return 0;
      return op->count >= 0 && extent_ok(op, op->count, op->count) && op->left_shift >= 0 &&
             op->left_shift <= 7 && shift_ok(op->shift) && shift_ok(op->in_shift[0]) &&
             shift_ok(op->in_shift[1]) && op->in_offset[0] >= -127 && op->in_offset[0] <= 128 &&
             op->in_offset[1] >= -127 && op->in_offset[1] <= 128;
    default:
      return 0;
  }
}

size_t edged_scratch_size(const edged_op* op, int32_t batch) {
  if (op == NULL) return 0;
  if (op->kind == EDGED_OP_HMATRIX) return edged_hmatrix_scratch_size(op, batch);
  if (op->kind == EDGED_OP_DEPTHWISE_CONV_2D) return spatial_ok(op) ? edged_depthwise_conv_2d_scratch_size(op) : 0;
  /* CONV_2D samples run one after another and reuse the same scratch. A depth
   * past int32 is refused by validation; sizing it would wrap (to zero). */
  if (op->kind != EDGED_OP_CONV_2D || !spatial_ok(op) ||
      volume(op->filter_h, op->filter_w, op->in_c) > INT32_MAX)
    return 0;
  return edged_conv_2d_scratch_size(op);
}

static int32_t validate(const edged_op* ops, int32_t n_ops, int32_t batch) {
  if (ops == NULL || batch < 1) return 1;
  for (int32_t i = 0; i < n_ops; ++i)
    if (!valid(&ops[i])) return i + 1;
  return 0;
}

static int32_t execute(const edged_op* ops, int32_t n_ops, int32_t batch) {
  for (int32_t i = 0; i < n_ops; ++i) {
    const edged_op* op = &ops[i];
    switch (op->kind) {
      case EDGED_OP_FULLY_CONNECTED: edged_fully_connected(op, batch); break;
      case EDGED_OP_CONV_2D: edged_conv_2d(op, batch); break;
      case EDGED_OP_DEPTHWISE_CONV_2D: edged_depthwise_conv_2d(op, batch); break;
      case EDGED_OP_MAX_POOL_2D: edged_max_pool_2d(op, batch); break;
      case EDGED_OP_AVERAGE_POOL_2D: edged_average_pool_2d(op, batch); break;
      case EDGED_OP_MEAN: edged_mean(op, batch); break;
      case EDGED_OP_ADD: edged_add(op, batch); break;
      case EDGED_OP_SOFTMAX: edged_softmax(op, batch); break;
      case EDGED_OP_LOGISTIC: edged_logistic(op, batch); break;
      case EDGED_OP_QUANTIZE: edged_quantize(op, batch); break;
      case EDGED_OP_REQUANTIZE: edged_requantize(op, batch); break;
      case EDGED_OP_DEQUANTIZE: edged_dequantize(op, batch); break;
      case EDGED_OP_CONCATENATION: edged_concatenation(op, batch); break;
      case EDGED_OP_PAD: edged_pad(op, batch); break;
      case EDGED_OP_COPY: edged_copy(op, batch); break;
      case EDGED_OP_HMATRIX: edged_hmatrix(op, batch); break;
      case EDGED_OP_HARD_SWISH: edged_hard_swish(op, batch); break;
      case EDGED_OP_MUL: edged_mul(op, batch); break;
      case EDGED_OP_RELU: edged_relu(op, batch); break;
      case EDGED_OP_MAXIMUM_MINIMUM: edged_maximum_minimum(op, batch); break;
      case EDGED_OP_LEAKY_RELU: edged_leaky_relu(op, batch); break;
      case EDGED_OP_PRELU: edged_prelu(op, batch); break;
      case EDGED_OP_RESIZE: edged_resize(op, batch); break;
      case EDGED_OP_STRIDED_VIEW: edged_strided_view(op, batch); break;
      case EDGED_OP_SQUARED_DIFFERENCE: edged_squared_difference(op, batch); break;
      case EDGED_OP_BATCH_MATMUL: edged_batch_matmul(op, batch); break;
      default: return i + 1; /* unreachable: validated above */
    }
  }
  return 0;
}

int32_t edged_validate(const edged_op* ops, int32_t n_ops, int32_t batch) {
  return n_ops <= 0 ? 0 : validate(ops, n_ops, batch);
}

int32_t edged_run(const edged_op* ops, int32_t n_ops, int32_t batch) {
  if (n_ops <= 0) return 0;
  const int32_t bad = validate(ops, n_ops, batch);
  return bad != 0 ? bad : execute(ops, n_ops, batch);
}

int32_t edged_execute(const edged_op* ops, int32_t n_ops, int32_t batch) {
  if (n_ops <= 0) return 0;
  if (ops == NULL || batch < 1) return -1;
  return execute(ops, n_ops, batch);
}

int32_t edged_run_repeat(const edged_op* ops, int32_t n_ops, int32_t batch, int32_t reps) {
  if (n_ops <= 0) return 0;
  const int32_t bad = validate(ops, n_ops, batch);
  if (bad != 0) return bad;
  for (int32_t r = 0; r < reps; ++r) execute(ops, n_ops, batch);
  return 0;
}
