/* Plain-C tests of the HMATRIX operator (ref/hmatrix.c).
 *
 * Random hierarchical matrices: low-rank leaves A_l B_l on random row and
 * column ranges plus dense blocks, as the stacked W1 (every B_l) and W2
 * (dense blocks | every A_l) the operator takes. Each is checked through
 * edged_run, dense and in several block shapes on every variant this CPU
 * runs, against an independent integer model of the two stages, for batches
 * that cross the operator's row chunks, several rows per sample and strided
 * samples. Invalid descriptors must be rejected before anything is written.
 *
 * Prints "N passed, M failed" last and exits non-zero if anything failed.
 */
#include "harness.h"
#include "sparse_util.h"

typedef struct {
  int32_t in_c, mid_c, out_c, rows, batch, in_zp;
  int8_t* w1;  /* [mid_c, in_c] */
  int8_t* w2;  /* [out_c, in_c + mid_c] */
  int32_t *bias, *mult1, *shift1, *mult2, *shift2;
  int8_t* x;   /* batch samples of rows * in_c, in_stride apart */
  int64_t in_stride, out_stride;
} hm_case;

/* A random H-matrix: 1..4 low-rank leaves, dense blocks elsewhere (with zero
 * blocks), each leaf's B on its column range and A on its row range. */
static hm_case random_case(void) {
  hm_case c;
  c.in_c = rnd_range(0, 3) == 0 ? rnd_range(64, 300) : rnd_range(1, 70);
  c.out_c = rnd_range(1, 90);
  const int leaves = rnd_range(1, 4);
  int32_t r0[4], r1[4], c0[4], c1[4], rank[4];
  c.mid_c = 0;
  for (int l = 0; l < leaves; ++l) {
    r0[l] = rnd_range(0, c.out_c - 1);
    r1[l] = rnd_range(r0[l] + 1, c.out_c);
    c0[l] = rnd_range(0, c.in_c - 1);
    c1[l] = rnd_range(c0[l] + 1, c.in_c);
    rank[l] = rnd_range(1, 9);
    c.mid_c += rank[l];
  }
  const int32_t width = c.in_c + c.mid_c;
  c.w1 = (int8_t*)calloc((size_t)c.mid_c * (size_t)c.in_c, 1);
  int8_t* dense = random_sparse(c.out_c, c.in_c, 4, 4, 60);
  c.w2 = (int8_t*)calloc((size_t)c.out_c * (size_t)width, 1);
  for (int32_t o = 0; o < c.out_c; ++o)
    memcpy(c.w2 + (size_t)o * (size_t)width, dense + (size_t)o * (size_t)c.in_c, (size_t)c.in_c);
  free(dense);
  int32_t k0 = 0;
  for (int l = 0; l < leaves; ++l) {
    for (int32_t k = k0; k < k0 + rank[l]; ++k) {
      for (int32_t d = c0[l]; d < c1[l]; ++d) c.w1[(size_t)k * (size_t)c.in_c + (size_t)d] = (int8_t)rnd_range(-127, 127);
      for (int32_t o = r0[l]; o < r1[l]; ++o)
        c.w2[(size_t)o * (size_t)width + (size_t)(c.in_c + k)] = (int8_t)rnd_range(-127, 127);
    }
    k0 += rank[l];
  }
  c.bias = (int32_t*)malloc((size_t)c.out_c * 4);
  c.mult2 = (int32_t*)malloc((size_t)c.out_c * 4);
  c.shift2 = (int32_t*)malloc((size_t)c.out_c * 4);
  c.mult1 = (int32_t*)malloc((size_t)c.mid_c * 4);
  c.shift1 = (int32_t*)malloc((size_t)c.mid_c * 4);
  for (int32_t o = 0; o < c.out_c; ++o) c.bias[o] = rnd_range(-50000, 50000);
  random_requant(c.mult2, c.shift2, c.out_c, 0);
  random_requant(c.mult1, c.shift1, c.mid_c, rnd_range(0, 5) == 0);
  c.in_zp = rnd_range(-127, 127);
  c.rows = rnd_range(0, 3) == 0 ? rnd_range(2, 3) : 1;
  c.batch = rnd_range(0, 2) == 0 ? 1 : rnd_range(2, 19);
  c.in_stride = (int64_t)c.rows * c.in_c + (rnd_range(0, 3) == 0 ? rnd_range(1, 7) : 0);
  c.out_stride = (int64_t)c.rows * c.out_c + (rnd_range(0, 3) == 0 ? rnd_range(1, 7) : 0);
  c.x = (int8_t*)malloc((size_t)(c.batch * c.in_stride));
  fill_i8(c.x, (size_t)(c.batch * c.in_stride));
  return c;
}

static void case_free(hm_case* c) {
  free(c->w1); free(c->w2); free(c->bias); free(c->mult1); free(c->shift1); free(c->mult2);
  free(c->shift2); free(c->x);
}

/* The operator's contract, evaluated directly in int64. */
static int8_t* model(const hm_case* c, int32_t out_zp, int32_t lo, int32_t hi) {
  const int32_t width = c->in_c + c->mid_c;
  int8_t* y = (int8_t*)malloc((size_t)(c->batch * c->out_stride));
  int8_t* mid = (int8_t*)malloc((size_t)c->mid_c);
  for (int32_t b = 0; b < c->batch; ++b)
    for (int32_t r = 0; r < c->rows; ++r) {
      const int8_t* x = c->x + b * c->in_stride + (int64_t)r * c->in_c;
      for (int32_t k = 0; k < c->mid_c; ++k) {
        int64_t t = 0;
        for (int32_t d = 0; d < c->in_c; ++d) t += ((int64_t)x[d] - c->in_zp) * c->w1[(size_t)k * (size_t)c->in_c + (size_t)d];
        mid[k] = model_requant(t, c->mult1[k], c->shift1[k], 0, -128, 127, 0);
      }
      for (int32_t o = 0; o < c->out_c; ++o) {
        const int8_t* w = c->w2 + (size_t)o * (size_t)width;
        int64_t acc = c->bias[o];
        for (int32_t d = 0; d < c->in_c; ++d) acc += ((int64_t)x[d] - c->in_zp) * w[d];
        for (int32_t k = 0; k < c->mid_c; ++k) acc += (int64_t)mid[k] * w[c->in_c + k];
        y[b * c->out_stride + (int64_t)r * c->out_c + o] = model_requant(acc, c->mult2[o], c->shift2[o], out_zp, lo, hi, 0);
      }
    }
  free(mid);
  return y;
}

/* W packed for the descriptor's format: dense for `variant`, or block-sparse. */
static void* pack(const int8_t* w, const int32_t* bias, int32_t input_offset, int32_t n, int32_t k,
                  int variant, int sparse, int32_t br, int32_t bc) {
  if (!sparse) {
    void* p = malloc(edged_s8_gemm_packed_size(variant, n, k));
    edged_s8_gemm_pack(variant, w, bias, input_offset, n, k, p);
    return p;
  }
  bcsr s = bcsr_from_dense(w, n, k, br, bc);
  void* p = malloc(edged_s8_spmm_packed_size(n, k, br, bc, s.nnz));
  edged_s8_spmm_pack(n, k, br, bc, s.row_ptr, s.col_idx, s.nnz, s.values, bias, input_offset, p);
  bcsr_free(&s);
  return p;
}

static const int32_t kBlocks[][2] = {{16, 4}, {8, 4}, {4, 4}, {1, 16}, {1, 4}, {1, 1}, {3, 5}};

static void test_hmatrix_matches_model(void) {
  for (int t = 0; t < 150; ++t) {
    hm_case c = random_case();
    const int32_t width = c.in_c + c.mid_c;
    /* The mid columns carry no zero point: fold in_zp * their row sums into the bias. */
    int32_t* bias2 = (int32_t*)malloc((size_t)c.out_c * 4);
    for (int32_t o = 0; o < c.out_c; ++o) {
      int64_t s = 0;
      for (int32_t k = 0; k < c.mid_c; ++k) s += c.w2[(size_t)o * (size_t)width + (size_t)(c.in_c + k)];
      bias2[o] = c.bias[o] + c.in_zp * (int32_t)s;
    }
    const int32_t out_zp = rnd_range(-128, 127);
    int32_t lo, hi;
    random_act(&lo, &hi);
    int8_t* want = model(&c, out_zp, lo, hi);

    edged_op op = blank_op(EDGED_OP_HMATRIX);
    op.in[0] = c.x; op.in_stride[0] = c.in_stride; op.out_stride = c.out_stride;
    op.in_h = c.rows; op.in_c = c.in_c; op.out_c = c.out_c; op.mid_c = c.mid_c;
    op.out_multiplier = c.mult2; op.out_shift = c.shift2;
    op.mid_multiplier = c.mult1; op.mid_shift = c.shift1;
    op.input_offset = -c.in_zp; op.output_offset = out_zp; op.act_min = lo; op.act_max = hi;
    op.scratch = malloc(edged_scratch_size(&op, c.batch));
    for (int v = 0; v < EDGED_VARIANT_COUNT; ++v)
      for (int sparse = 0; sparse <= 1; ++sparse) {
        if (!(sparse ? spmm_runnable(v) : runnable(v))) continue;
        const int32_t* blk = kBlocks[rnd_range(0, (int)(sizeof(kBlocks) / sizeof(kBlocks[0])) - 1)];
        void* p1 = pack(c.w1, NULL, -c.in_zp, c.mid_c, c.in_c, v, sparse, blk[0], blk[1]);
        void* p2 = pack(c.w2, bias2, -c.in_zp, c.out_c, width, v, sparse, blk[0], blk[1]);
        op.variant = v;
        op.weight_format = sparse ? EDGED_WEIGHTS_BLOCK_SPARSE : EDGED_WEIGHTS_DENSE;
        op.mid_weights = p1; op.weights = p2;
        guarded got = guarded_new((size_t)(c.batch * c.out_stride));
        memcpy(got.data, want, (size_t)(c.batch * c.out_stride)); /* the gaps between samples stay */
        for (int32_t b = 0; b < c.batch; ++b)
          memset(got.data + b * c.out_stride, 0x11, (size_t)c.rows * (size_t)c.out_c);
        op.out = got.data;
        CHECK(edged_run(&op, 1, c.batch) == 0, "hmatrix run");
        int bad = 0;
        for (int64_t i = 0; i < c.batch * c.out_stride; ++i) bad += got.data[i] != want[i];
        CHECK(bad == 0 && guarded_intact(&got),
              "hmatrix %s %s %dx%d in_c=%d mid_c=%d out_c=%d rows=%d batch=%d: %d mismatches",
              variant_name(v), sparse ? "sparse" : "dense", blk[0], blk[1], c.in_c, c.mid_c, c.out_c,
              c.rows, c.batch, bad);
        free(got.base); free(p1); free(p2);
      }
    free(op.scratch); free(want); free(bias2); case_free(&c);
  }
}

/* A descriptor that does not hold together is rejected and writes nothing. */
static void test_hmatrix_rejects(void) {
  hm_case c = random_case();
  const int32_t width = c.in_c + c.mid_c;
  void* p1 = pack(c.w1, NULL, 0, c.mid_c, c.in_c, EDGED_VARIANT_REF, 0, 0, 0);
  void* p2 = pack(c.w2, c.bias, 0, c.out_c, width, EDGED_VARIANT_REF, 0, 0, 0);
  edged_op op = blank_op(EDGED_OP_HMATRIX);
  op.in[0] = c.x; op.in_stride[0] = c.in_stride; op.out_stride = c.out_stride;
  op.in_h = c.rows; op.in_c = c.in_c; op.out_c = c.out_c; op.mid_c = c.mid_c;
  op.out_multiplier = c.mult2; op.out_shift = c.shift2;
  op.mid_multiplier = c.mult1; op.mid_shift = c.shift1;
  op.weights = p2; op.mid_weights = p1;
  op.scratch = malloc(edged_scratch_size(&op, c.batch));
  guarded out = guarded_new((size_t)(c.batch * c.out_stride));
  op.out = out.data;
  CHECK(edged_run(&op, 1, c.batch) == 0, "valid hmatrix rejected");
  memset(out.data, 0x33, (size_t)(c.batch * c.out_stride));
  edged_op bad;
  bad = op; bad.mid_c += 1;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "mid_c disagreeing with the packed weights");
  bad = op; bad.mid_weights = p2;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "stage-2 weights as stage 1");
  bad = op; bad.scratch = NULL;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "no scratch");
  bad = op; bad.mid_shift = NULL;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "no mid shifts");
  bad = op; bad.weight_format = EDGED_WEIGHTS_BLOCK_SPARSE;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "dense buffers run as sparse");
  int32_t saved = c.shift1[0];
  c.shift1[0] = 31;
  CHECK(edged_run(&op, 1, c.batch) == 1, "mid shift out of range");
  c.shift1[0] = saved;
  bad = op; bad.mid_c = 0;
  CHECK(edged_run(&bad, 1, c.batch) == 1, "no mid features");
  int untouched = 1;
  for (int64_t i = 0; i < c.batch * c.out_stride; ++i) untouched &= (uint8_t)out.data[i] == 0x33;
  CHECK(untouched && guarded_intact(&out), "a rejected descriptor wrote output");
  free(out.base); free(op.scratch); free(p1); free(p2); case_free(&c);
}

int main(void) {
  test_hmatrix_matches_model();
  test_hmatrix_rejects();
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
