/* Packing and checking of block-sparse int8 weights (s8_spmm family).
 *
 * The Python side (edged/sparse/block_csr.py) builds and validates the
 * block-CSR arrays; this packer validates them again, because a corrupt
 * index here would become an out-of-bounds read in every kernel. */
#include "internal.h"

static uint64_t round_up(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

static int layout(int32_t out_c, int32_t depth, int32_t br, int32_t bc, int64_t nnz,
                  edged_sparse_header* h) {
  if (out_c <= 0 || depth <= 0 || br < 1 || bc < 1 || br > EDGED_SPARSE_MAX_BLOCK ||
      bc > EDGED_SPARSE_MAX_BLOCK || nnz < 0)
    return -1;
  const int64_t n_rows = ((int64_t)out_c + br - 1) / br;
  const int64_t n_cols = ((int64_t)depth + bc - 1) / bc;
  if (n_cols > 65536 || nnz > n_rows * n_cols || nnz > INT32_MAX) return -1;
  memset(h, 0, sizeof(*h));
  h->magic = EDGED_SPARSE_MAGIC;
  h->out_c = out_c;
  h->depth = depth;
  h->block_rows = br;
  h->block_cols = bc;
  h->n_block_rows = (int32_t)n_rows;
  h->n_block_cols = (int32_t)n_cols;
  h->index_bytes = n_cols <= 256 ? 1 : 2;
  h->nnz_blocks = nnz;
  const uint64_t padded_rows = (uint64_t)n_rows * (uint64_t)br;
  h->row_ptr_offset = round_up(sizeof(edged_sparse_header), 64);
  h->index_offset = h->row_ptr_offset + round_up(((uint64_t)n_rows + 1) * 4u, 64);
  h->term_offset = h->index_offset + round_up((uint64_t)nnz * (uint64_t)h->index_bytes, 64);
  h->term_u8_offset = h->term_offset + round_up(padded_rows * 4u, 64);
  h->value_offset = h->term_u8_offset + round_up(padded_rows * 4u, 64);
  h->total_size = h->value_offset + (uint64_t)nnz * (uint64_t)br * (uint64_t)bc;
  if (h->total_size > (uint64_t)SIZE_MAX) return -1;
  return 0;
}

size_t edged_s8_spmm_packed_size(int32_t out_c, int32_t depth, int32_t block_rows,
                                 int32_t block_cols, int64_t nnz_blocks) {
  edged_sparse_header h;
  if (layout(out_c, depth, block_rows, block_cols, nnz_blocks, &h) != 0) return 0;
  return (size_t)h.total_size;
}

/* Checks the block-CSR arrays against the header's geometry. */
static int32_t check_arrays(const edged_sparse_header* h, const int32_t* row_ptr,
                            const int32_t* col_idx, const int8_t* values) {
  const size_t br = (size_t)h->block_rows, bc = (size_t)h->block_cols;
  if (row_ptr[0] != 0 || row_ptr[h->n_block_rows] != h->nnz_blocks) return -2;
  /* Monotone with the right end means every row range lies inside [0, nnz). */
  for (int32_t i = 0; i < h->n_block_rows; ++i)
    if (row_ptr[i + 1] < row_ptr[i]) return -2;
  for (int32_t i = 0; i < h->n_block_rows; ++i) {
    for (int32_t k = row_ptr[i]; k < row_ptr[i + 1]; ++k) {
      if (col_idx[k] < 0 || col_idx[k] >= h->n_block_cols) return -3;
      if (k > row_ptr[i] && col_idx[k] <= col_idx[k - 1]) return -3;
      /* The ragged edges must be zero: kernels may multiply them. */
      const int8_t* blk = values + (size_t)k * br * bc;
      for (size_t j = 0; j < br; ++j)
        for (size_t t = 0; t < bc; ++t) {
          const int outside = (size_t)i * br + j >= (size_t)h->out_c ||
                              (size_t)col_idx[k] * bc + t >= (size_t)h->depth;
          if (outside && blk[j * bc + t] != 0) return -4;
        }
    }
  }
  return 0;
}

int32_t edged_s8_spmm_pack(int32_t out_c, int32_t depth, int32_t block_rows, int32_t block_cols,
                           const int32_t* row_ptr, const int32_t* col_idx, int64_t nnz_blocks,
                           const int8_t* values, const int32_t* bias, int32_t input_offset,
                           void* packed) {
  edged_sparse_header h;
  if (packed == NULL || row_ptr == NULL || layout(out_c, depth, block_rows, block_cols,
                                                  nnz_blocks, &h) != 0)
    return -1;
  if (nnz_blocks > 0 && (col_idx == NULL || values == NULL)) return -1;
  const int32_t status = check_arrays(&h, row_ptr, col_idx, values);
  if (status != 0) return status;

  memset(packed, 0, (size_t)h.total_size);
  memcpy(packed, &h, sizeof(h));
  char* base = (char*)packed;
  memcpy(base + h.row_ptr_offset, row_ptr, ((size_t)h.n_block_rows + 1) * 4u);
  for (int64_t k = 0; k < nnz_blocks; ++k) {
    if (h.index_bytes == 1)
      ((uint8_t*)(base + h.index_offset))[k] = (uint8_t)col_idx[k];
    else
      ((uint16_t*)(base + h.index_offset))[k] = (uint16_t)col_idx[k];
  }
  const size_t br = (size_t)block_rows, bc = (size_t)block_cols;
  memcpy(base + h.value_offset, values, (size_t)nnz_blocks * br * bc);

  /* Fold bias and the input zero point: sum_d (x_d + off) w_d + bias =
   * sum_d x_d w_d + (bias + off * rowsum). Pruned weights are absent and
   * contribute nothing to rowsum, exactly as zeros would in the dense fold.
   * Arithmetic wraps mod 2^32 like TFLite's accumulator. */
  int32_t* term = (int32_t*)(base + h.term_offset);
  int32_t* term_u8 = (int32_t*)(base + h.term_u8_offset);
  for (int32_t i = 0; i < h.n_block_rows; ++i) {
    for (size_t j = 0; j < br; ++j) {
      const size_t o = (size_t)i * br + j;
      if (o >= (size_t)out_c) break;
      int32_t rowsum = 0;
      for (int32_t k = row_ptr[i]; k < row_ptr[i + 1]; ++k)
        for (size_t t = 0; t < bc; ++t) rowsum += values[(size_t)k * br * bc + j * bc + t];
      const uint32_t t = (bias ? (uint32_t)bias[o] : 0u) + (uint32_t)input_offset * (uint32_t)rowsum;
      term[o] = (int32_t)t;
      term_u8[o] = (int32_t)(t - 128u * (uint32_t)rowsum);
    }
  }
  return 0;
}

int edged_s8_spmm_check(const void* packed, int32_t out_c, int32_t depth) {
  if (packed == NULL) return -1;
  const edged_sparse_header* h = (const edged_sparse_header*)packed;
  edged_sparse_header want;
  if (h->magic != EDGED_SPARSE_MAGIC || h->out_c != out_c || h->depth != depth ||
      layout(out_c, depth, h->block_rows, h->block_cols, h->nnz_blocks, &want) != 0)
    return -1;
  if (h->index_bytes != want.index_bytes || h->value_offset != want.value_offset ||
      h->total_size != want.total_size || h->row_ptr_offset != want.row_ptr_offset ||
      h->index_offset != want.index_offset || h->term_offset != want.term_offset ||
      h->term_u8_offset != want.term_u8_offset)
    return -1;
  return 0;
}

edged_s8_spmm_fn edged_s8_spmm_get(int32_t variant) {
  switch (variant) {
    case EDGED_VARIANT_REF: return edged_s8_spmm_ref;
#if defined(__x86_64__)
    case EDGED_VARIANT_AVX2: return edged_s8_spmm_avx2;
    case EDGED_VARIANT_AVX512VNNI: return edged_s8_spmm_avx512vnni;
#endif
#if defined(__aarch64__)
    case EDGED_VARIANT_NEON: return edged_s8_spmm_neon;
    case EDGED_VARIANT_NEONDOT: return edged_s8_spmm_neondot;
#endif
    default: return NULL;
  }
}

edged_s8_gemm_fn edged_matmul_get(const edged_op* op) {
  return op->weight_format == EDGED_WEIGHTS_BLOCK_SPARSE ? edged_s8_spmm_get(op->variant)
                                                         : edged_s8_gemm_get(op->variant);
}
