/* libFuzzer target: a descriptor edged_run accepts never leaves its buffers.
 *
 * The input bytes are decoded into one edged_op of any kind, with any field
 * values. Every buffer is then allocated at exactly the size the descriptor
 * contract gives it: input k holds batch * in_stride[k] elements, the output
 * batch * out_stride, packed weights what their packer wrote, per-channel
 * arrays one entry per channel of the packed matrix (out_c for depthwise),
 * scratch edged_scratch_size(). Built with AddressSanitizer, any read or
 * write edged_run lets through past one of them stops the fuzzer.
 *
 *   make -C kernels fuzz FUZZ_SECONDS=60
 */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../edged_kernels.h"

typedef struct {
  const uint8_t* p;
  size_t n;
} reader;

static uint32_t take(reader* r, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= (uint32_t)(r->n ? *r->p : 0) << (8 * i);
    if (r->n) { ++r->p; --r->n; }
  }
  return v;
}

/* Mostly small values around the edges of validity, sometimes a limit. */
static int32_t field(reader* r) {
  static const int32_t edges[16] = {0, -1, INT32_MAX, INT32_MIN, 1 << 16, 1 << 20, 1 << 30, 65535,
                                    4096, 255, 256, 127, 128, -128, 1 << 24, 100000};
  const uint32_t b = take(r, 1);
  return b < 240 ? (int32_t)(b % 66) - 2 : edges[b - 240];
}

static void* alloc(size_t bytes) {
  void* p = NULL;
  /* Exact size: ASan poisons from the first byte past it. */
  if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;
  memset(p, 0x11, bytes ? bytes : 1);
  return p;
}

enum { MAX_BUFFERS = 32, MAX_STRIDE = 4096, MAX_CHANNELS = 1 << 16 };

typedef struct {
  void* owned[MAX_BUFFERS];
  int count;
} arena;

static void* keep(arena* a, void* p) {
  if (p != NULL && a->count < MAX_BUFFERS) a->owned[a->count++] = p;
  return p;
}

static int32_t* channel_array(arena* a, reader* r, int64_t n, int shifts) {
  if (n < 1 || n > MAX_CHANNELS) return NULL;
  int32_t* v = (int32_t*)keep(a, alloc((size_t)n * sizeof(int32_t)));
  if (v == NULL) return NULL;
  const int32_t base = shifts ? (int32_t)(take(r, 1) % 48) - 36 : (int32_t)(1u << 30) + (int32_t)take(r, 2);
  for (int64_t i = 0; i < n; ++i) v[i] = base;
  return v;
}

/* Weights packed for (out_c, depth) by the library's own packer, dense or block-sparse (1x1 blocks). */
static const void* packed(arena* a, reader* r, int32_t variant, int sparse, int32_t* out_c, int32_t* depth) {
  *out_c = 1 + (int32_t)(take(r, 1) % 64);
  *depth = 1 + (int32_t)(take(r, 2) % 600);
  const size_t n = (size_t)*out_c * (size_t)*depth;
  int8_t* w = (int8_t*)keep(a, alloc(n));
  if (w == NULL) return NULL;
  for (size_t i = 0; i < n; ++i) w[i] = (int8_t)(i * 37u + 11u);
  if (!sparse) {
    const size_t size = edged_s8_gemm_packed_size(variant, *out_c, *depth);
    void* p = size ? keep(a, alloc(size)) : NULL;
    return p && edged_s8_gemm_pack(variant, w, NULL, 3, *out_c, *depth, p) == 0 ? p : NULL;
  }
  int32_t* row_ptr = (int32_t*)keep(a, alloc(((size_t)*out_c + 1) * sizeof(int32_t)));
  int32_t* col_idx = (int32_t*)keep(a, alloc(n * sizeof(int32_t)));
  if (row_ptr == NULL || col_idx == NULL) return NULL;
  for (int32_t o = 0; o <= *out_c; ++o) row_ptr[o] = o * *depth;
  for (size_t i = 0; i < n; ++i) col_idx[i] = (int32_t)(i % (size_t)*depth);
  const size_t size = edged_s8_spmm_packed_size(*out_c, *depth, 1, 1, (int64_t)n);
  void* p = size ? keep(a, alloc(size)) : NULL;
  return p && edged_s8_spmm_pack(*out_c, *depth, 1, 1, row_ptr, col_idx, (int64_t)n, w, NULL, 3, p) == 0
             ? p : NULL;
}

static size_t elem_size(const edged_op* op, int output) {
  if (op->kind == EDGED_OP_COPY) return op->elem_size > 0 ? (size_t)op->elem_size : 1u;
  if (op->kind == (output ? EDGED_OP_DEQUANTIZE : EDGED_OP_QUANTIZE)) return sizeof(float);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  reader r = {data, size};
  arena a = {{0}, 0};
  edged_op op;
  memset(&op, 0, sizeof(op));
  op.kind = 1 + (int32_t)(take(&r, 1) % EDGED_OP_BATCH_MATMUL);
  op.variant = (int32_t)(take(&r, 1) % 3); /* the x86-64 variants; others are refused by the CPU check */
  op.n_in = field(&r);
  const int32_t batch = 1 + (int32_t)(take(&r, 1) % 3);
  op.in_h = field(&r); op.in_w = field(&r); op.in_c = field(&r);
  op.out_h = field(&r); op.out_w = field(&r); op.out_c = field(&r);
  op.filter_h = field(&r); op.filter_w = field(&r);
  op.stride_h = field(&r); op.stride_w = field(&r);
  op.dilation_h = field(&r); op.dilation_w = field(&r);
  op.pad_top = field(&r); op.pad_left = field(&r);
  op.depth_multiplier = field(&r);
  op.outer = field(&r); op.inner = field(&r);
  for (int k = 0; k < 8; ++k) op.axis_size[k] = field(&r);
  for (int k = 0; k < 3; ++k) { op.pad_before[k] = field(&r); op.pad_after[k] = field(&r); }
  op.count = field(&r);
  op.mid_c = field(&r);
  op.mode = (int32_t)(take(&r, 1) % 3);
  op.elem_size = (int32_t)(take(&r, 1) % 6);
  op.act_min = -128 + (int32_t)(take(&r, 1) % 64);
  op.act_max = 127 - (int32_t)(take(&r, 1) % 64);
  op.input_offset = (int32_t)(take(&r, 1) % 256) - 127;
  op.output_offset = (int32_t)(take(&r, 1) % 256) - 128;
  op.left_shift = (int32_t)(take(&r, 1) % 32);
  op.multiplier = (int32_t)(1u << 30);
  op.shift = (int32_t)(take(&r, 1) % 48) - 36;
  for (int k = 0; k < 2; ++k) {
    op.in_multiplier[k] = (int32_t)(1u << 30);
    op.in_shift[k] = (int32_t)(take(&r, 1) % 40) - 35;
  }
  op.scale = 0.05f;
  op.zero_point = (int32_t)(take(&r, 1) % 256) - 128;

  /* Activations: exactly batch * stride elements each. */
  for (int k = 0; k < 8; ++k) {
    op.in_stride[k] = (int64_t)(take(&r, 2) % (MAX_STRIDE + 1));
    op.in[k] = keep(&a, alloc((size_t)batch * (size_t)op.in_stride[k] * elem_size(&op, 0)));
  }
  op.out_stride = (int64_t)(take(&r, 2) % (MAX_STRIDE + 1));
  op.out = keep(&a, alloc((size_t)batch * (size_t)op.out_stride * elem_size(&op, 1)));

  /* Constants, sized as the contract says. */
  const uint32_t flags = take(&r, 1);
  int32_t w_out = 0, w_depth = 0;
  switch (op.kind) {
    case EDGED_OP_FULLY_CONNECTED:
    case EDGED_OP_CONV_2D:
    case EDGED_OP_HMATRIX:
      op.weight_format = (int32_t)(flags & 1);
      op.weights = packed(&a, &r, op.variant, (int)(flags & 1), &w_out, &w_depth);
      op.out_multiplier = channel_array(&a, &r, w_out, 0);
      op.out_shift = channel_array(&a, &r, w_out, 1);
      if (op.kind == EDGED_OP_HMATRIX) {
        int32_t m_out = 0, m_depth = 0;
        op.mid_weights = packed(&a, &r, op.variant, (int)(flags & 1), &m_out, &m_depth);
        op.mid_multiplier = channel_array(&a, &r, m_out, 0);
        op.mid_shift = channel_array(&a, &r, m_out, 1);
      }
      break;
    case EDGED_OP_DEPTHWISE_CONV_2D: {
      if (op.filter_h > 0 && op.filter_w > 0 && op.out_c > 0 && op.filter_h <= 64 && op.filter_w <= 64 &&
          op.out_c <= MAX_CHANNELS) {
        op.weights = keep(&a, alloc((size_t)op.filter_h * (size_t)op.filter_w * (size_t)op.out_c));
        op.bias = (flags & 2) ? channel_array(&a, &r, op.out_c, 0) : NULL;
      }
      op.out_multiplier = channel_array(&a, &r, op.out_c, 0);
      op.out_shift = channel_array(&a, &r, op.out_c, 1);
      break;
    }
    case EDGED_OP_SOFTMAX:
    case EDGED_OP_LOGISTIC: {
      float* table = (float*)keep(&a, alloc(256 * sizeof(float)));
      if (table != NULL)
        for (int i = 0; i < 256; ++i) table[i] = 0.25f + (float)i / 256.0f;
      op.table = table;
      break;
    }
    case EDGED_OP_PRELU: /* alpha: `count` entries */
    case EDGED_OP_SQUARED_DIFFERENCE: /* the constant operand: `count` entries */
      if (op.count >= 0 && op.count <= MAX_STRIDE) op.weights = keep(&a, alloc((size_t)op.count));
      break;
    case EDGED_OP_RESIZE: {
      const int64_t width = op.mode == EDGED_RESIZE_BILINEAR ? 3 : 1;
      if (op.out_h >= 1 && op.out_h <= MAX_STRIDE && op.out_w >= 1 && op.out_w <= MAX_STRIDE) {
        int32_t* rows = (int32_t*)keep(&a, alloc((size_t)(op.out_h * width) * sizeof(int32_t)));
        int32_t* cols = (int32_t*)keep(&a, alloc((size_t)(op.out_w * width) * sizeof(int32_t)));
        if (rows != NULL && cols != NULL) {
          for (int64_t i = 0; i < op.out_h * width; ++i) rows[i] = field(&r);
          for (int64_t i = 0; i < op.out_w * width; ++i) cols[i] = field(&r);
        }
        op.rows = rows;
        op.cols = cols;
      }
      break;
    }
    case EDGED_OP_STRIDED_VIEW:
      op.view_rank = field(&r);
      for (int k = 0; k < 6; ++k) {
        op.view_shape[k] = field(&r);
        op.view_stride[k] = (int64_t)field(&r) * (take(&r, 1) & 1 ? 1 : -1);
      }
      op.view_start = field(&r);
      break;
    case EDGED_OP_BATCH_MATMUL: { /* a constant right side: outer * in_c * out_c entries */
      for (int k = 0; k < 4; ++k) op.view_stride[k] = field(&r);
      if (op.outer > 0 && op.in_c > 0 && op.out_c > 0 && op.outer <= 64 && op.in_c <= 4096 &&
          op.out_c <= 4096) {
        const int64_t n = (int64_t)op.outer * op.in_c * op.out_c;
        if (n <= (1 << 22)) op.weights = keep(&a, alloc((size_t)n));
      }
      break;
    }
    default:
      break;
  }
  size_t scratch = edged_scratch_size(&op, batch);
  if (scratch <= ((size_t)64 << 20)) {
    op.scratch = keep(&a, alloc(scratch));
    edged_run(&op, 1, batch);
  }
  for (int i = 0; i < a.count; ++i) free(a.owned[i]);
  return 0;
}
