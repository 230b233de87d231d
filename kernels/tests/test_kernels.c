/* Plain-C test harness for the edged matrix kernels (no Python needed).
 *
 * Every GEMM variant this CPU can run is checked bit for bit against naive
 * loops written independently here (int64 accumulation, gemmlowp arithmetic
 * re-derived from its definition), over random shapes, zero points,
 * multipliers, shifts and activation ranges from a fixed seed; then
 * FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D through edged_run(); the other
 * ops are in test_ops.c and test_spatial.c. Buffers are allocated at their
 * exact size and outputs get guard bytes, so under -fsanitize=address any
 * over-read or over-write fails loudly.
 *
 * Prints "N passed, M failed" last and exits non-zero if anything failed.
 */
#include "harness.h"

/* ---- 1. scalar arithmetic --------------------------------------------- */
static void test_scalar_mbqm(void) {
  static const int32_t special[] = {INT32_MIN, INT32_MIN + 1, -65536, -32768, -3, -2, -1, 0, 1,
                                    2, 3, 32768, 65535, INT32_MAX - 1, INT32_MAX, 1 << 30};
  const int ns = (int)(sizeof(special) / sizeof(special[0]));
  int bad = 0;
  for (int t = 0; t < 200000; ++t) {
    const int32_t x = t < ns * ns ? special[t % ns] : rnd_i32() >> rnd_range(0, 31);
    const int32_t m = t < ns * ns ? special[t / ns] : (rnd_range(0, 3) ? rnd_i32() : rnd_range(1 << 30, INT32_MAX));
    const int32_t s = rnd_range(-31, 30);
    if (edged_mbqm(x, m, s) != model_mbqm(x, m, s, 1)) ++bad;
    if (edged_mbqm_rhu(x, m, s) != model_mbqm(x, m, s, 0)) ++bad;
  }
  /* Ties: x * m / 2^31 exactly .5 below zero is where the two rules differ. */
  CHECK(edged_rdbypot(-3, 1) == -2 && edged_rshift_rhu(-3, 1) == -1, "tie rounding");
  CHECK(edged_srdhm(INT32_MIN, INT32_MIN) == INT32_MAX, "srdhm saturation");
  CHECK(bad == 0, "scalar mbqm: %d mismatches", bad);
}

/* ---- 2. GEMM variants -------------------------------------------------- */
static void test_gemm_case(int32_t m, int32_t n, int32_t k, int extreme, int rhaz) {
  const size_t a_stride = (size_t)k + (size_t)(rnd_range(0, 3) == 0 ? rnd_range(1, 9) : 0);
  const size_t c_stride = (size_t)n + (size_t)(rnd_range(0, 3) == 0 ? rnd_range(1, 9) : 0);
  int8_t* a = (int8_t*)malloc((size_t)(m - 1) * a_stride + (size_t)k);
  int8_t* w = (int8_t*)malloc((size_t)n * (size_t)k);
  int32_t* bias = (int32_t*)malloc((size_t)n * sizeof(int32_t));
  int32_t* mult = (int32_t*)malloc((size_t)n * sizeof(int32_t));
  int32_t* shift = (int32_t*)malloc((size_t)n * sizeof(int32_t));
  int8_t* expect = (int8_t*)malloc((size_t)m * (size_t)n);
  fill_i8(a, (size_t)(m - 1) * a_stride + (size_t)k);
  fill_i8(w, (size_t)n * (size_t)k);
  const int use_bias = extreme || rnd_range(0, 4) != 0;
  for (int32_t o = 0; o < n; ++o)
    bias[o] = extreme ? rnd_i32() : rnd_range(-100000, 100000);
  random_requant(mult, shift, n, extreme);
  if (extreme) {
    /* Channels with zero weights make the accumulator exactly the bias, so
     * the saturating INT32_MIN * INT32_MIN case and ties at the int32 edges
     * are actually reached. */
    static const int32_t edge[] = {INT32_MIN, INT32_MIN + 1, INT32_MAX, -(1 << 30), 1 << 30, -1, 0, 1};
    for (int32_t o = 0; o < n; ++o) {
      if (rnd_range(0, 3) != 0) continue;
      memset(w + (size_t)o * (size_t)k, 0, (size_t)k);
      bias[o] = edge[rnd_range(0, 7)];
      if (rnd_range(0, 1)) mult[o] = INT32_MIN;
      if (rnd_range(0, 1)) shift[o] = rnd_range(-31, 1);
    }
  }
  const int32_t in_zp = rnd_range(-128, 127), out_zp = rnd_range(-128, 127);
  int32_t lo, hi;
  random_act(&lo, &hi);

  for (int32_t r = 0; r < m; ++r)
    for (int32_t o = 0; o < n; ++o) {
      int64_t acc = use_bias ? bias[o] : 0;
      for (int32_t d = 0; d < k; ++d)
        acc += ((int64_t)a[(size_t)r * a_stride + (size_t)d] - in_zp) * w[(size_t)o * (size_t)k + (size_t)d];
      expect[(size_t)r * (size_t)n + (size_t)o] = model_requant(acc, mult[o], shift[o], out_zp, lo, hi, rhaz);
    }

  const edged_requant rq = {mult, shift, out_zp, lo, hi, rhaz == 1, rhaz == 2};
  for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
    const size_t size = edged_s8_gemm_packed_size(v, n, k);
    CHECK(size > 0, "packed size for %s", variant_name(v));
    void* packed = malloc(size);
    CHECK(edged_s8_gemm_pack(v, w, use_bias ? bias : NULL, -in_zp, n, k, packed) == 0, "pack");
    CHECK(edged_s8_gemm_check(packed, v, n, k) == 0, "packed header");
    if (runnable(v)) {
      guarded c = guarded_new((size_t)(m - 1) * c_stride + (size_t)n);
      edged_s8_gemm_get(v)((size_t)m, a, a_stride, packed, c.data, c_stride, &rq);
      int bad = 0, first = -1;
      for (int32_t r = 0; r < m; ++r)
        for (int32_t o = 0; o < n; ++o)
          if (c.data[(size_t)r * c_stride + (size_t)o] != expect[(size_t)r * (size_t)n + (size_t)o]) {
            if (first < 0) first = r * n + o;
            ++bad;
          }
      CHECK(bad == 0, "gemm %s m=%d n=%d k=%d extreme=%d rhaz=%d: %d mismatches (first at %d)",
            variant_name(v), m, n, k, extreme, rhaz, bad, first);
      CHECK(guarded_intact(&c), "gemm %s wrote outside its output", variant_name(v));
      free(c.base);
    }
    free(packed);
  }
  free(a); free(w); free(bias); free(mult); free(shift); free(expect);
}

static void test_gemm(void) {
  for (int t = 0; t < 400; ++t) {
    int32_t m = rnd_range(0, 2) == 0 ? 1 : rnd_range(1, 11);
    int32_t n = rnd_range(0, 4) == 0 ? rnd_range(60, 200) : rnd_range(1, 48);
    int32_t k = rnd_range(0, 4) == 0 ? rnd_range(100, 400) : rnd_range(1, 70);
    test_gemm_case(m, n, k, 0, t % 3);
  }
  /* Depth 1 with full-range bias, multipliers and shifts drives arbitrary
   * int32 accumulators through the SIMD requantizers. */
  for (int t = 0; t < 200; ++t) test_gemm_case(rnd_range(1, 6), rnd_range(1, 70), rnd_range(1, 3), 1, t % 3);
  /* Shapes of real layers, including the GEMV the benchmark times. */
  test_gemm_case(1, 1024, 1024, 0, 0);
  test_gemm_case(3, 1000, 1280, 0, 0);
  test_gemm_case(49, 64, 576, 0, 1);
  /* Row tiles of 16, 8 and 4 over channel-block pairs and a lone block. */
  test_gemm_case(37, 40, 20, 0, 1);
  test_gemm_case(16, 9, 8, 0, 0);
  test_gemm_case(61, 48, 36, 0, 2);
}

/* ---- 3. ops through edged_run ------------------------------------------ */
static void test_fully_connected(void) {
  for (int t = 0; t < 60; ++t) {
    const int32_t batch = rnd_range(1, 3), rows = rnd_range(1, 3);
    const int32_t depth = rnd_range(1, 90), n = rnd_range(1, 70);
    int8_t* x = (int8_t*)malloc((size_t)(batch * rows * depth));
    int8_t* w = (int8_t*)malloc((size_t)(n * depth));
    int32_t *bias = (int32_t*)malloc((size_t)n * 4), *mult = (int32_t*)malloc((size_t)n * 4),
            *shift = (int32_t*)malloc((size_t)n * 4);
    fill_i8(x, (size_t)(batch * rows * depth));
    fill_i8(w, (size_t)(n * depth));
    for (int32_t o = 0; o < n; ++o) bias[o] = rnd_range(-5000, 5000);
    random_requant(mult, shift, n, 0);
    edged_op op = blank_op(EDGED_OP_FULLY_CONNECTED);
    op.in_h = rows; op.in_c = depth; op.out_c = n;
    op.in[0] = x; op.in_stride[0] = rows * depth; op.out_stride = rows * n;
    op.out_multiplier = mult; op.out_shift = shift;
    op.input_offset = -rnd_range(-128, 127); op.output_offset = rnd_range(-128, 127);
    random_act(&op.act_min, &op.act_max);
    for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
      if (!runnable(v)) continue;
      void* packed = malloc(edged_s8_gemm_packed_size(v, n, depth));
      edged_s8_gemm_pack(v, w, bias, op.input_offset, n, depth, packed);
      guarded y = guarded_new((size_t)(batch * rows * n));
      op.variant = v; op.weights = packed; op.out = y.data;
      CHECK(edged_run(&op, 1, batch) == 0, "fc run");
      int bad = 0;
      for (int32_t r = 0; r < batch * rows; ++r)
        for (int32_t o = 0; o < n; ++o) {
          int64_t acc = bias[o];
          for (int32_t d = 0; d < depth; ++d)
            acc += ((int64_t)x[r * depth + d] + op.input_offset) * w[o * depth + d];
          bad += y.data[r * n + o] != model_requant(acc, mult[o], shift[o], op.output_offset,
                                                    op.act_min, op.act_max, 0);
        }
      CHECK(bad == 0 && guarded_intact(&y), "fc %s: %d mismatches", variant_name(v), bad);
      /* A plan packed for another shape must be rejected, not run. */
      op.out_c = n + 1;
      CHECK(edged_run(&op, 1, batch) == 1, "fc with mismatched packing accepted");
      op.out_c = n;
      free(y.base);
      free(packed);
    }
    free(x); free(w); free(bias); free(mult); free(shift);
  }
}

static void test_conv_2d(void) {
  for (int t = 0; t < 120; ++t) {
    edged_op op = blank_op(EDGED_OP_CONV_2D);
    const int32_t batch = rnd_range(1, 2);
    /* Every sixth layer is deep enough for im2col to work in several chunks
     * and to copy window rows of more than 64 bytes. */
    const int deep = t % 6 == 1;
    op.in_h = rnd_range(deep ? 8 : 1, deep ? 16 : 9); op.in_w = rnd_range(deep ? 8 : 1, deep ? 16 : 9);
    op.in_c = rnd_range(deep ? 100 : 1, deep ? 150 : 20);
    if (t % 3 == 2) op.in_c = 4 * ((op.in_c + 3) / 4); /* the VNNI kernel that reads windows in place */
    if (t % 7 == 3) { op.in_c = 3; op.in_w = rnd_range(6, 16); } /* RGB rows wide enough for its shuffle */
    op.out_c = rnd_range(1, 40);
    const int pointwise = t % 5 == 0;
    op.filter_h = pointwise ? 1 : rnd_range(1, 4); op.filter_w = pointwise ? 1 : rnd_range(1, 4);
    op.stride_h = pointwise ? 1 : rnd_range(1, 3); op.stride_w = pointwise ? 1 : rnd_range(1, 3);
    op.dilation_h = pointwise ? 1 : rnd_range(1, 2); op.dilation_w = pointwise ? 1 : rnd_range(1, 2);
    const int32_t eff_h = (op.filter_h - 1) * op.dilation_h + 1, eff_w = (op.filter_w - 1) * op.dilation_w + 1;
    if (rnd_range(0, 1) || pointwise) { /* SAME */
      op.out_h = (op.in_h + op.stride_h - 1) / op.stride_h;
      op.out_w = (op.in_w + op.stride_w - 1) / op.stride_w;
      const int32_t th = (op.out_h - 1) * op.stride_h + eff_h - op.in_h;
      const int32_t tw = (op.out_w - 1) * op.stride_w + eff_w - op.in_w;
      op.pad_top = th > 0 ? th / 2 : 0; op.pad_left = tw > 0 ? tw / 2 : 0;
    } else { /* VALID */
      if (eff_h > op.in_h || eff_w > op.in_w) continue;
      op.out_h = (op.in_h - eff_h + op.stride_h) / op.stride_h;
      op.out_w = (op.in_w - eff_w + op.stride_w) / op.stride_w;
    }
    const int32_t depth = op.filter_h * op.filter_w * op.in_c;
    const size_t in_n = (size_t)(op.in_h * op.in_w * op.in_c), out_n = (size_t)(op.out_h * op.out_w * op.out_c);
    int8_t* x = (int8_t*)malloc(in_n * (size_t)batch);
    int8_t* w = (int8_t*)malloc((size_t)(op.out_c * depth));
    int32_t *bias = (int32_t*)malloc((size_t)op.out_c * 4), *mult = (int32_t*)malloc((size_t)op.out_c * 4),
            *shift = (int32_t*)malloc((size_t)op.out_c * 4);
    fill_i8(x, in_n * (size_t)batch);
    fill_i8(w, (size_t)(op.out_c * depth));
    for (int32_t o = 0; o < op.out_c; ++o) bias[o] = rnd_range(-5000, 5000);
    random_requant(mult, shift, op.out_c, 0);
    op.in[0] = x; op.in_stride[0] = (int64_t)in_n; op.out_stride = (int64_t)out_n;
    op.out_multiplier = mult; op.out_shift = shift;
    op.input_offset = -rnd_range(-128, 127); op.output_offset = rnd_range(-128, 127);
    random_act(&op.act_min, &op.act_max);

    /* Direct convolution, skipping padding taps like TFLite's reference. */
    int8_t* expect = (int8_t*)malloc(out_n * (size_t)batch);
    for (int32_t b = 0; b < batch; ++b)
      for (int32_t oy = 0; oy < op.out_h; ++oy)
        for (int32_t ox = 0; ox < op.out_w; ++ox)
          for (int32_t o = 0; o < op.out_c; ++o) {
            int64_t acc = bias[o];
            for (int32_t ky = 0; ky < op.filter_h; ++ky)
              for (int32_t kx = 0; kx < op.filter_w; ++kx) {
                const int32_t iy = oy * op.stride_h - op.pad_top + ky * op.dilation_h;
                const int32_t ix = ox * op.stride_w - op.pad_left + kx * op.dilation_w;
                if (iy < 0 || iy >= op.in_h || ix < 0 || ix >= op.in_w) continue;
                for (int32_t c = 0; c < op.in_c; ++c)
                  acc += ((int64_t)x[(size_t)b * in_n + (size_t)((iy * op.in_w + ix) * op.in_c + c)] + op.input_offset) *
                         w[((o * op.filter_h + ky) * op.filter_w + kx) * op.in_c + c];
              }
            expect[(size_t)b * out_n + (size_t)((oy * op.out_w + ox) * op.out_c + o)] =
                model_requant(acc, mult[o], shift[o], op.output_offset, op.act_min, op.act_max, 0);
          }

    const size_t scratch_n = edged_scratch_size(&op, batch);
    CHECK(!pointwise || scratch_n == 0, "pointwise conv should need no scratch");
    void* scratch = scratch_n ? malloc(scratch_n) : NULL;
    for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
      if (!runnable(v)) continue;
      void* packed = malloc(edged_s8_gemm_packed_size(v, op.out_c, depth));
      edged_s8_gemm_pack(v, w, bias, op.input_offset, op.out_c, depth, packed);
      guarded y = guarded_new(out_n * (size_t)batch);
      op.variant = v; op.weights = packed; op.out = y.data; op.scratch = scratch;
      const int32_t rc = edged_run(&op, 1, batch);
      CHECK(rc == 0, "conv run rc=%d", rc);
      const int bad = memcmp(y.data, expect, out_n * (size_t)batch) != 0;
      CHECK(!bad && guarded_intact(&y), "conv %s %dx%dx%d k%dx%d s%d,%d d%d,%d -> %dx%dx%d",
            variant_name(v), op.in_h, op.in_w, op.in_c, op.filter_h, op.filter_w, op.stride_h,
            op.stride_w, op.dilation_h, op.dilation_w, op.out_h, op.out_w, op.out_c);
      if (scratch_n) {
        op.scratch = NULL;
        CHECK(edged_run(&op, 1, batch) == 1, "conv without scratch accepted");
      }
      free(y.base);
      free(packed);
    }
    free(scratch); free(expect); free(x); free(w); free(bias); free(mult); free(shift);
  }
}

static void test_depthwise(void) {
  for (int t = 0; t < 150; ++t) {
    edged_op op = blank_op(EDGED_OP_DEPTHWISE_CONV_2D);
    const int32_t batch = rnd_range(1, 2);
    op.in_h = rnd_range(1, 9); op.in_w = rnd_range(1, 9); op.in_c = t % 4 == 3 ? 8 : rnd_range(1, t % 7 == 0 ? 300 : 40); /* 8: pixel pairs */
    op.depth_multiplier = rnd_range(0, 3) == 0 ? rnd_range(2, 3) : 1;
    op.out_c = op.in_c * op.depth_multiplier;
    op.filter_h = rnd_range(1, 5); op.filter_w = rnd_range(1, 5);
    op.stride_h = rnd_range(1, 2); op.stride_w = rnd_range(1, 2);
    op.dilation_h = rnd_range(1, 2); op.dilation_w = rnd_range(1, 2);
    op.out_h = (op.in_h + op.stride_h - 1) / op.stride_h;
    op.out_w = (op.in_w + op.stride_w - 1) / op.stride_w;
    op.pad_top = rnd_range(0, op.filter_h - 1); op.pad_left = rnd_range(0, op.filter_w - 1);
    const size_t in_n = (size_t)(op.in_h * op.in_w * op.in_c), out_n = (size_t)(op.out_h * op.out_w * op.out_c);
    const size_t w_n = (size_t)(op.filter_h * op.filter_w * op.out_c);
    int8_t* x = (int8_t*)malloc(in_n * (size_t)batch);
    int8_t* w = (int8_t*)malloc(w_n);
    int32_t *bias = (int32_t*)malloc((size_t)op.out_c * 4), *mult = (int32_t*)malloc((size_t)op.out_c * 4),
            *shift = (int32_t*)malloc((size_t)op.out_c * 4);
    fill_i8(x, in_n * (size_t)batch);
    fill_i8(w, w_n);
    for (int32_t o = 0; o < op.out_c; ++o) bias[o] = rnd_range(-5000, 5000);
    random_requant(mult, shift, op.out_c, 0);
    op.in[0] = x; op.in_stride[0] = (int64_t)in_n; op.out_stride = (int64_t)out_n;
    op.weights = w; op.bias = rnd_range(0, 3) ? bias : NULL;
    op.out_multiplier = mult; op.out_shift = shift;
    op.input_offset = -rnd_range(-128, 127); op.output_offset = rnd_range(-128, 127);
    random_act(&op.act_min, &op.act_max);
    guarded y = guarded_new(out_n * (size_t)batch);
    op.out = y.data;
    /* With the scratch a plan gives it (the AVX-512 kernel where the CPU has
     * one), or without (the AVX2 kernel). */
    const int with_scratch = t % 3 != 2;
    const size_t scratch_n = edged_scratch_size(&op, batch);
    guarded scratch = guarded_new(scratch_n ? scratch_n : 1);
    op.scratch = with_scratch ? scratch.data : NULL;
    CHECK(edged_run(&op, 1, batch) == 0, "depthwise run");
    CHECK(guarded_intact(&scratch), "depthwise scratch overrun");
    int bad = 0;
    const int32_t body = op.out_c - op.out_c % 8;
    for (int32_t b = 0; b < batch; ++b)
      for (int32_t oy = 0; oy < op.out_h; ++oy)
        for (int32_t ox = 0; ox < op.out_w; ++ox)
          for (int32_t oc = 0; oc < op.out_c; ++oc) {
            const int32_t ic = oc / op.depth_multiplier;
            int64_t acc = op.bias ? op.bias[oc] : 0;
            for (int32_t ky = 0; ky < op.filter_h; ++ky)
              for (int32_t kx = 0; kx < op.filter_w; ++kx) {
                const int32_t iy = oy * op.stride_h - op.pad_top + ky * op.dilation_h;
                const int32_t ix = ox * op.stride_w - op.pad_left + kx * op.dilation_w;
                if (iy < 0 || iy >= op.in_h || ix < 0 || ix >= op.in_w) continue;
                acc += ((int64_t)x[(size_t)b * in_n + (size_t)((iy * op.in_w + ix) * op.in_c + ic)] + op.input_offset) *
                       w[(ky * op.filter_w + kx) * op.out_c + oc];
              }
            const int8_t e = model_requant(acc, mult[oc], shift[oc], op.output_offset, op.act_min,
                                           op.act_max, oc >= body);
            bad += y.data[(size_t)b * out_n + (size_t)((oy * op.out_w + ox) * op.out_c + oc)] != e;
          }
    CHECK(bad == 0 && guarded_intact(&y), "depthwise %dx%dx%d dm%d k%dx%d s%d,%d d%d,%d%s: %d mismatches",
          op.in_h, op.in_w, op.in_c, op.depth_multiplier, op.filter_h, op.filter_w, op.stride_h,
          op.stride_w, op.dilation_h, op.dilation_w, with_scratch ? "" : " (no scratch)", bad);
    free(y.base); free(scratch.base); free(x); free(w); free(bias); free(mult); free(shift);
  }
}

int main(void) {
  print_variants();

  test_scalar_mbqm();
  test_gemm();
  test_fully_connected();
  test_conv_2d();
  test_depthwise();

  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
