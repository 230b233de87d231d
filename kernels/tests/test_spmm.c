/* Plain-C tests of the block-sparse int8 GEMM family (s8_spmm_*).
 *
 * Weights are random dense matrices with random blocks zeroed; this file
 * builds their block-CSR form itself, packs it, and checks every variant
 * this CPU can run against the independent integer model on the dense
 * matrix (the same model test_kernels.c checks the dense GEMMs with), for
 * every block shape, ragged edges, uint8 and uint16 indices, rows of the
 * batch at odd strides, and through edged_run as FULLY_CONNECTED and
 * CONV_2D. Outputs carry guard bytes, so ASan catches any stray access.
 *
 * Prints "N passed, M failed" last and exits non-zero if anything failed.
 */
#include "harness.h"
#include "sparse_util.h"

static const int32_t kShapes[][2] = {{1, 1}, {1, 4}, {1, 16}, {4, 4}, {8, 4}, {16, 4}, {4, 1},
                                     {2, 8}, {16, 1}, {3, 5}};
#define N_SHAPES ((int)(sizeof(kShapes) / sizeof(kShapes[0])))

static void test_spmm_case(int32_t m, int32_t n, int32_t k, int32_t br, int32_t bc, int sparsity,
                           int extreme, int rhaz) {
  const size_t a_stride = (size_t)k + (size_t)(rnd_range(0, 3) == 0 ? rnd_range(1, 9) : 0);
  const size_t c_stride = (size_t)n + (size_t)(rnd_range(0, 3) == 0 ? rnd_range(1, 9) : 0);
  int8_t* a = (int8_t*)malloc((size_t)(m - 1) * a_stride + (size_t)k);
  fill_i8(a, (size_t)(m - 1) * a_stride + (size_t)k);
  int8_t* w = random_sparse(n, k, br, bc, sparsity);
  int32_t* bias = (int32_t*)malloc((size_t)n * 4);
  int32_t* mult = (int32_t*)malloc((size_t)n * 4);
  int32_t* shift = (int32_t*)malloc((size_t)n * 4);
  for (int32_t o = 0; o < n; ++o) bias[o] = extreme ? rnd_i32() : rnd_range(-100000, 100000);
  random_requant(mult, shift, n, extreme);
  const int use_bias = rnd_range(0, 4) != 0;
  const int32_t in_zp = rnd_range(-128, 127), out_zp = rnd_range(-128, 127);
  int32_t lo, hi;
  random_act(&lo, &hi);

  int8_t* expect = (int8_t*)malloc((size_t)m * (size_t)n);
  for (int32_t r = 0; r < m; ++r)
    for (int32_t o = 0; o < n; ++o) {
      int64_t acc = use_bias ? bias[o] : 0;
      for (int32_t d = 0; d < k; ++d)
        acc += ((int64_t)a[(size_t)r * a_stride + (size_t)d] - in_zp) * w[(size_t)o * (size_t)k + (size_t)d];
      expect[(size_t)r * (size_t)n + (size_t)o] = model_requant(acc, mult[o], shift[o], out_zp, lo, hi, rhaz);
    }

  bcsr s = bcsr_from_dense(w, n, k, br, bc);
  const size_t size = edged_s8_spmm_packed_size(n, k, br, bc, s.nnz);
  CHECK(size > 0, "spmm packed size n=%d k=%d %dx%d", n, k, br, bc);
  void* packed = malloc(size);
  CHECK(edged_s8_spmm_pack(n, k, br, bc, s.row_ptr, s.col_idx, s.nnz, s.values,
                           use_bias ? bias : NULL, -in_zp, packed) == 0, "spmm pack");
  CHECK(edged_s8_spmm_check(packed, n, k) == 0, "spmm header");
  CHECK(edged_s8_spmm_check(packed, n + 1, k) != 0, "spmm header accepts a wrong shape");

  const edged_requant rq = {mult, shift, out_zp, lo, hi, rhaz == 1, rhaz == 2};
  for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
    if (!spmm_runnable(v)) continue;
    guarded c = guarded_new((size_t)(m - 1) * c_stride + (size_t)n);
    edged_s8_spmm_get(v)((size_t)m, a, a_stride, packed, c.data, c_stride, &rq);
    int bad = 0, first = -1;
    for (int32_t r = 0; r < m; ++r)
      for (int32_t o = 0; o < n; ++o)
        if (c.data[(size_t)r * c_stride + (size_t)o] != expect[(size_t)r * (size_t)n + (size_t)o]) {
          if (first < 0) first = r * n + o;
          ++bad;
        }
    CHECK(bad == 0, "spmm %s m=%d n=%d k=%d block %dx%d sparsity %d extreme=%d rhaz=%d: "
          "%d mismatches (first at %d)", variant_name(v), m, n, k, br, bc, sparsity, extreme, rhaz,
          bad, first);
    CHECK(guarded_intact(&c), "spmm %s wrote outside its output", variant_name(v));
    free(c.base);
  }
  free(packed);
  bcsr_free(&s);
  free(a); free(w); free(bias); free(mult); free(shift); free(expect);
}

static void test_spmm(void) {
  for (int t = 0; t < 600; ++t) {
    const int32_t* shape = kShapes[rnd_range(0, N_SHAPES - 1)];
    const int32_t m = rnd_range(0, 2) == 0 ? 1 : rnd_range(1, 19);
    const int32_t n = rnd_range(0, 4) == 0 ? rnd_range(60, 200) : rnd_range(1, 48);
    /* Depth a multiple of the block width most of the time (the SIMD paths),
     * ragged otherwise (the reference path must clip). */
    int32_t k = rnd_range(0, 4) == 0 ? rnd_range(100, 400) : rnd_range(1, 70);
    if (rnd_range(0, 2) != 0) k = (k + shape[1] - 1) / shape[1] * shape[1];
    static const int sparsities[] = {0, 50, 80, 95, 100};
    test_spmm_case(m, n, k, shape[0], shape[1], sparsities[rnd_range(0, 4)], 0, t % 3);
  }
  for (int t = 0; t < 100; ++t) {
    const int32_t* shape = kShapes[rnd_range(0, N_SHAPES - 1)];
    test_spmm_case(rnd_range(1, 6), rnd_range(1, 70), shape[1] * rnd_range(1, 2), shape[0], shape[1],
                   30, 1, t % 3);
  }
  /* uint16 indices (more than 256 block columns) on every shape a SIMD
   * variant specialises, and the benchmark layers. */
  test_spmm_case(2, 40, 1100, 1, 1, 90, 0, 0);
  test_spmm_case(5, 40, 1100, 1, 4, 80, 0, 1);
  test_spmm_case(3, 36, 1200, 4, 4, 80, 0, 0);
  test_spmm_case(1, 24, 1100, 8, 4, 70, 0, 0);
  test_spmm_case(6, 24, 1100, 8, 4, 70, 0, 1);
  test_spmm_case(1, 64, 1200, 16, 4, 80, 0, 0);
  test_spmm_case(7, 40, 1204, 16, 4, 80, 0, 1);
  test_spmm_case(1, 20, 4200, 1, 16, 80, 0, 0);
  test_spmm_case(4, 20, 4208, 1, 16, 80, 0, 1);
  /* Batch tiles (8 rows and more) with uint16 indices. */
  test_spmm_case(9, 40, 1100, 16, 4, 80, 0, 0);
  test_spmm_case(17, 24, 1100, 8, 4, 70, 0, 1);
  test_spmm_case(12, 36, 1200, 4, 4, 80, 0, 0);
  test_spmm_case(16, 20, 4208, 1, 16, 80, 0, 1);
  test_spmm_case(10, 40, 1100, 1, 1, 90, 0, 0);
  test_spmm_case(16, 30, 1100, 1, 4, 85, 0, 1);
  test_spmm_case(1, 1024, 1024, 16, 4, 90, 0, 0);
  test_spmm_case(16, 1024, 1024, 1, 1, 90, 0, 0);
  test_spmm_case(1, 256, 4096, 8, 4, 70, 0, 0);
}

/* FULLY_CONNECTED and CONV_2D through edged_run: block-sparse weights give
 * the dense variant's bytes exactly. */
static void test_ops_sparse_equals_dense(void) {
  for (int t = 0; t < 60; ++t) {
    const int conv = t & 1;
    const int32_t* shape = kShapes[rnd_range(0, N_SHAPES - 1)];
    edged_op op = blank_op(conv ? EDGED_OP_CONV_2D : EDGED_OP_FULLY_CONNECTED);
    const int32_t batch = rnd_range(1, 3);
    if (conv) {
      op.in_h = rnd_range(1, 7); op.in_w = rnd_range(1, 7); op.in_c = rnd_range(1, 9);
      op.filter_h = rnd_range(1, 3); op.filter_w = rnd_range(1, 3);
      op.stride_h = op.stride_w = 1; op.dilation_h = op.dilation_w = 1;
      op.pad_top = op.filter_h / 2; op.pad_left = op.filter_w / 2;
      op.out_h = op.in_h + 2 * op.pad_top - op.filter_h + 1;
      op.out_w = op.in_w + 2 * op.pad_left - op.filter_w + 1;
      op.out_c = rnd_range(1, 40);
    } else {
      op.in_h = rnd_range(1, 3); op.in_c = rnd_range(1, 90); op.out_c = rnd_range(1, 70);
    }
    const int32_t depth = conv ? op.filter_h * op.filter_w * op.in_c : op.in_c;
    const int32_t in_n = conv ? op.in_h * op.in_w * op.in_c : op.in_h * op.in_c;
    const int32_t out_n = conv ? op.out_h * op.out_w * op.out_c : op.in_h * op.out_c;
    const int32_t n = op.out_c;
    int8_t* x = (int8_t*)malloc((size_t)(batch * in_n));
    fill_i8(x, (size_t)(batch * in_n));
    int8_t* w = random_sparse(n, depth, shape[0], shape[1], 70);
    int32_t *bias = (int32_t*)malloc((size_t)n * 4), *mult = (int32_t*)malloc((size_t)n * 4),
            *shift = (int32_t*)malloc((size_t)n * 4);
    for (int32_t o = 0; o < n; ++o) bias[o] = rnd_range(-5000, 5000);
    random_requant(mult, shift, n, 0);
    op.in[0] = x; op.in_stride[0] = in_n; op.out_stride = out_n;
    op.out_multiplier = mult; op.out_shift = shift;
    op.input_offset = -rnd_range(-127, 127); op.output_offset = rnd_range(-128, 127);
    random_act(&op.act_min, &op.act_max);

    op.variant = EDGED_VARIANT_REF;
    op.weight_format = EDGED_WEIGHTS_DENSE;
    void* dense = malloc(edged_s8_gemm_packed_size(EDGED_VARIANT_REF, n, depth));
    edged_s8_gemm_pack(EDGED_VARIANT_REF, w, bias, op.input_offset, n, depth, dense);
    op.weights = dense;
    op.scratch = malloc(edged_scratch_size(&op, batch) + 1);
    guarded want = guarded_new((size_t)(batch * out_n));
    op.out = want.data;
    CHECK(edged_run(&op, 1, batch) == 0, "dense run");

    bcsr s = bcsr_from_dense(w, n, depth, shape[0], shape[1]);
    void* packed = malloc(edged_s8_spmm_packed_size(n, depth, shape[0], shape[1], s.nnz));
    edged_s8_spmm_pack(n, depth, shape[0], shape[1], s.row_ptr, s.col_idx, s.nnz, s.values, bias,
                       op.input_offset, packed);
    op.weight_format = EDGED_WEIGHTS_BLOCK_SPARSE;
    op.weights = packed;
    for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
      if (!spmm_runnable(v)) continue;
      guarded got = guarded_new((size_t)(batch * out_n));
      op.variant = v;
      op.out = got.data;
      CHECK(edged_run(&op, 1, batch) == 0, "sparse run");
      CHECK(memcmp(got.data, want.data, (size_t)(batch * out_n)) == 0 && guarded_intact(&got),
            "%s %s block %dx%d: sparse differs from dense", conv ? "conv" : "fc", variant_name(v),
            shape[0], shape[1]);
      free(got.base);
    }
    /* A dense descriptor pointing at sparse weights (or vice versa) is invalid. */
    op.weight_format = EDGED_WEIGHTS_DENSE;
    CHECK(edged_run(&op, 1, batch) == 1, "sparse buffer accepted as dense");
    op.weight_format = EDGED_WEIGHTS_BLOCK_SPARSE;
    op.weights = dense;
    CHECK(edged_run(&op, 1, batch) == 1, "dense buffer accepted as sparse");
    op.weight_format = 7;
    CHECK(edged_run(&op, 1, batch) == 1, "unknown weight format accepted");
    free(want.base); free(dense); free(packed); free(op.scratch); bcsr_free(&s);
    free(x); free(w); free(bias); free(mult); free(shift);
  }
}

static void test_pack_rejects(void) {
  /* 2 x 8 matrix in 1x4 blocks: 2 block rows, 2 block columns. */
  int8_t values[16];
  for (int i = 0; i < 16; ++i) values[i] = (int8_t)(i + 1);
  int32_t row_ptr[3] = {0, 2, 4}, col_idx[4] = {0, 1, 0, 1};
  const size_t size = edged_s8_spmm_packed_size(2, 8, 1, 4, 4);
  void* packed = malloc(size);
  CHECK(edged_s8_spmm_pack(2, 8, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == 0, "valid");
  col_idx[1] = 2;
  CHECK(edged_s8_spmm_pack(2, 8, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == -3,
        "column out of range");
  col_idx[1] = 0;
  CHECK(edged_s8_spmm_pack(2, 8, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == -3,
        "repeated column");
  col_idx[1] = 1;
  row_ptr[1] = 5;
  CHECK(edged_s8_spmm_pack(2, 8, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == -2,
        "row_ptr not monotone");
  row_ptr[1] = 2;
  row_ptr[2] = 3;
  CHECK(edged_s8_spmm_pack(2, 8, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == -2,
        "row_ptr end != nnz");
  row_ptr[2] = 4;
  /* depth 7: the last column of each second block is outside and nonzero. */
  CHECK(edged_s8_spmm_pack(2, 7, 1, 4, row_ptr, col_idx, 4, values, NULL, 0, packed) == -4,
        "nonzero in the ragged edge");
  CHECK(edged_s8_spmm_packed_size(2, 8, 65, 4, 1) == 0, "block too tall");
  CHECK(edged_s8_spmm_packed_size(2, 8, 1, 4, 5) == 0, "more blocks than fit");
  CHECK(edged_s8_spmm_packed_size(2, 8, 0, 4, 0) == 0, "empty block");
  free(packed);
}

int main(void) {
  printf("cpu variants with a block-sparse kernel:");
  for (int i = 0; i < EDGED_VARIANT_COUNT; ++i)
    if (spmm_runnable(i)) printf(" %s", variant_name(i));
  printf("\n");
  test_spmm();
  test_ops_sparse_equals_dense();
  test_pack_rejects();
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
