/* Block-sparse helpers of the plain-C test programs: a test-side block-CSR
 * builder (independent of the packer it checks) and random block-sparse
 * matrices. Include after harness.h. */
#ifndef EDGED_TEST_SPARSE_UTIL_H
#define EDGED_TEST_SPARSE_UTIL_H

static EDGED_UNUSED int spmm_runnable(int v) {
  return (edged_cpu_variants() & (1u << v)) && edged_s8_spmm_get(v) != NULL;
}

/* Block-CSR of a dense [n, k] matrix: every block with a nonzero is kept. */
typedef struct {
  int32_t br, bc, n_rows, n_cols;
  int64_t nnz;
  int32_t* row_ptr;
  int32_t* col_idx;
  int8_t* values;
} bcsr;

static EDGED_UNUSED bcsr bcsr_from_dense(const int8_t* w, int32_t n, int32_t k, int32_t br, int32_t bc) {
  bcsr s;
  s.br = br;
  s.bc = bc;
  s.n_rows = (n + br - 1) / br;
  s.n_cols = (k + bc - 1) / bc;
  s.row_ptr = (int32_t*)malloc(((size_t)s.n_rows + 1) * 4);
  s.col_idx = (int32_t*)malloc((size_t)s.n_rows * (size_t)s.n_cols * 4 + 4);
  s.values = (int8_t*)calloc((size_t)s.n_rows * (size_t)s.n_cols * (size_t)(br * bc) + 1, 1);
  s.nnz = 0;
  s.row_ptr[0] = 0;
  for (int32_t i = 0; i < s.n_rows; ++i) {
    for (int32_t q = 0; q < s.n_cols; ++q) {
      int any = 0;
      for (int32_t j = 0; j < br; ++j)
        for (int32_t t = 0; t < bc; ++t) {
          const int32_t o = i * br + j, d = q * bc + t;
          if (o < n && d < k && w[(size_t)o * (size_t)k + (size_t)d] != 0) any = 1;
        }
      if (!any) continue;
      int8_t* blk = s.values + (size_t)s.nnz * (size_t)(br * bc);
      for (int32_t j = 0; j < br; ++j)
        for (int32_t t = 0; t < bc; ++t) {
          const int32_t o = i * br + j, d = q * bc + t;
          blk[j * bc + t] = (o < n && d < k) ? w[(size_t)o * (size_t)k + (size_t)d] : 0;
        }
      s.col_idx[s.nnz++] = q;
    }
    s.row_ptr[i + 1] = (int32_t)s.nnz;
  }
  return s;
}

static EDGED_UNUSED void bcsr_free(bcsr* s) {
  free(s->row_ptr);
  free(s->col_idx);
  free(s->values);
}

/* A random [n, k] matrix whose (br x bc) blocks are zero with probability
 * `sparsity` percent; kept blocks also get a few zero entries. */
static EDGED_UNUSED int8_t* random_sparse(int32_t n, int32_t k, int32_t br, int32_t bc, int sparsity) {
  int8_t* w = (int8_t*)malloc((size_t)n * (size_t)k);
  fill_i8(w, (size_t)n * (size_t)k);
  for (int32_t i = 0; i < n; i += br)
    for (int32_t q = 0; q < k; q += bc) {
      const int drop = rnd_range(0, 99) < sparsity;
      for (int32_t o = i; o < i + br && o < n; ++o)
        for (int32_t d = q; d < q + bc && d < k; ++d)
          if (drop || rnd_range(0, 9) == 0) w[(size_t)o * (size_t)k + (size_t)d] = 0;
    }
  return w;
}

#endif /* EDGED_TEST_SPARSE_UTIL_H */
