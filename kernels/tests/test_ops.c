/* Plain-C tests of the element-wise, softmax and requantization ops through
 * edged_run(), and of its descriptor validation, against naive loops written
 * here (no Python needed). The matrix kernels are in test_kernels.c, pooling,
 * MEAN and the layout ops in test_spatial.c. Buffers are allocated at their exact size and outputs get
 * guard bytes, so under -fsanitize=address any over-read or over-write fails
 * loudly.
 *
 * Prints "N passed, M failed" last and exits non-zero if anything failed.
 */
#include "harness.h"

/* ---- ops through edged_run --------------------------------------------- */
typedef size_t (*vadd_body_fn)(const edged_op*, const int8_t*, const int8_t*, int8_t*, size_t);

/* One ADD vector body run on its own against the expected values `want`:
 * each body on this CPU is checked, not only the one dispatch picks. */
static void check_vadd_body(const char* name, vadd_body_fn body_fn, const edged_op* op, const int8_t* x0,
                            const int8_t* x1, const int8_t* want, size_t body) {
  guarded y = guarded_new(body > 0 ? body : 1);
  const size_t done = body_fn(op, x0, x1, y.data, body);
  int bad = 0;
  for (size_t i = 0; i < done; ++i) bad += y.data[i] != want[i];
  CHECK(done == body && bad == 0 && guarded_intact(&y), "add %s body: %zu of %zu, %d mismatches", name, done,
        body, bad);
  free(y.base);
}

static void test_add(void) {
  for (int t = 0; t < 320; ++t) {
    edged_op op = blank_op(EDGED_OP_ADD);
    const int32_t batch = rnd_range(1, 3);
    op.count = rnd_range(1, t % 5 == 0 ? 400 : 100);
    op.left_shift = 20;
    for (int k = 0; k < 2; ++k) {
      op.in_offset[k] = -rnd_range(-128, 127);
      op.in_multiplier[k] = rnd_range(1 << 30, INT32_MAX);
      op.in_shift[k] = rnd_range(-6, 0);
    }
    op.multiplier = rnd_range(1 << 30, INT32_MAX);
    op.shift = rnd_range(-22, 0); /* small exponents: each rounding step shows, int16 wrapping too */
    op.output_offset = rnd_range(-128, 127);
    if (t % 4 == 3) { /* anything the descriptor checks let through, past what converters write */
      for (int k = 0; k < 2; ++k) {
        op.in_multiplier[k] = t % 8 == 3 ? rnd_i32() : (rnd64() % 2 ? INT32_MIN : rnd_range(0, 1 << 30));
        op.in_shift[k] = rnd_range(-20, 0);
        if (rnd64() % 4 == 0) op.in_offset[k] = rnd64() % 2 ? -128 : 128;
      }
      op.multiplier = rnd64() % 4 ? rnd_i32() : INT32_MIN;
      op.shift = rnd_range(-31, 0);
      op.output_offset = rnd64() % 2 ? rnd_range(-5000, 5000) : rnd_i32();
    }
    random_act(&op.act_min, &op.act_max);
    const size_t n = (size_t)op.count;
    int8_t *x0 = (int8_t*)malloc(n * (size_t)batch), *x1 = (int8_t*)malloc(n * (size_t)batch);
    fill_i8(x0, n * (size_t)batch);
    fill_i8(x1, n * (size_t)batch);
    guarded y = guarded_new(n * (size_t)batch);
    op.in[0] = x0; op.in[1] = x1; op.out = y.data;
    op.in_stride[0] = op.in_stride[1] = op.out_stride = (int64_t)n;
    CHECK(edged_run(&op, 1, batch) == 0, "add run");
    const size_t total = n * (size_t)batch, body = total - total % 16;
    int8_t* want = (int8_t*)malloc(total);
    int bad = 0;
    for (size_t i = 0; i < total; ++i) {
      const int32_t a = x0[i] + op.in_offset[0], c = x1[i] + op.in_offset[1];
      int32_t raw;
      if (i < body) { /* merged shift, ties-up high multiplies, gemmlowp final shift */
        const int32_t sa = model_srdhm(a * (1 << (20 + op.in_shift[0])), op.in_multiplier[0]);
        const int32_t sc = model_srdhm(c * (1 << (20 + op.in_shift[1])), op.in_multiplier[1]);
        raw = model_rdbypot(model_srdhm(wrap32((int64_t)sa + sc), op.multiplier), -op.shift);
      } else {
        const int32_t sa = model_mbqm(a * (1 << 20), op.in_multiplier[0], op.in_shift[0], 1);
        const int32_t sc = model_mbqm(c * (1 << 20), op.in_multiplier[1], op.in_shift[1], 1);
        raw = model_mbqm(wrap32((int64_t)sa + sc), op.multiplier, op.shift, 1);
      }
      int32_t e = wrap32((int64_t)raw + op.output_offset);
      if (i < body) { /* vmovn to int16, the offset added in int16 (wrapping), vqmovn to int8 */
        e = (int16_t)(uint16_t)((uint32_t)(uint16_t)(int16_t)(uint16_t)(uint32_t)raw + (uint32_t)op.output_offset);
        e = e < -128 ? -128 : e > 127 ? 127 : e;
      }
      e = e < op.act_min ? op.act_min : e > op.act_max ? op.act_max : e;
      want[i] = (int8_t)e;
      bad += y.data[i] != e;
    }
    CHECK(bad == 0 && guarded_intact(&y), "add: %d mismatches", bad);
#if defined(__x86_64__)
    if (runnable(EDGED_VARIANT_AVX2)) check_vadd_body("avx2", edged_s8_vadd_avx2, &op, x0, x1, want, body);
    if (runnable(EDGED_VARIANT_AVX512VNNI))
      check_vadd_body("avx512", edged_s8_vadd_avx512, &op, x0, x1, want, body);
#elif defined(__aarch64__)
    check_vadd_body("neon", edged_s8_vadd_neon, &op, x0, x1, want, body);
#endif
    free(want); free(x0); free(x1); free(y.base);
  }
}

static void test_requantize_and_float(void) {
  for (int t = 0; t < 120; ++t) {
    const int32_t batch = rnd_range(1, 3), count = rnd_range(1, t % 2 ? 70 : 300);
    const size_t total = (size_t)(batch * count);
    int8_t* x = (int8_t*)malloc(total);
    fill_i8(x, total);
    /* REQUANTIZE */
    edged_op op = blank_op(EDGED_OP_REQUANTIZE);
    op.count = count; op.in[0] = x; op.in_stride[0] = op.out_stride = count;
    op.input_offset = -rnd_range(-128, 127); op.output_offset = rnd_range(-128, 127);
    op.multiplier = rnd_range(1 << 30, INT32_MAX); op.shift = rnd_range(-8, 2);
    guarded y = guarded_new(total);
    op.out = y.data;
    CHECK(edged_run(&op, 1, batch) == 0, "requantize run");
    int bad = 0;
    const size_t body = total - total % 16;
    for (size_t i = 0; i < total; ++i) {
      int64_t v = model_mbqm(x[i] + op.input_offset, op.multiplier, op.shift, i >= body) + (int64_t)op.output_offset;
      v = v < -128 ? -128 : v > 127 ? 127 : v;
      bad += y.data[i] != (int8_t)v;
    }
    CHECK(bad == 0 && guarded_intact(&y), "requantize: %d mismatches", bad);

    /* DEQUANTIZE then QUANTIZE back with the same parameters is the identity
     * for every int8 value when the scale is a power of two (exact floats). */
    float* f = (float*)malloc(total * sizeof(float));
    edged_op dq = blank_op(EDGED_OP_DEQUANTIZE);
    dq.count = count; dq.in[0] = x; dq.out = f; dq.in_stride[0] = dq.out_stride = count;
    dq.scale = ldexpf(1.0f, rnd_range(-10, 2)); dq.zero_point = rnd_range(-128, 127);
    edged_op q = blank_op(EDGED_OP_QUANTIZE);
    q.count = count; q.in[0] = f; q.in_stride[0] = q.out_stride = count;
    q.scale = dq.scale; q.zero_point = dq.zero_point;
    guarded back = guarded_new(total);
    q.out = back.data;
    edged_op plan[2] = {dq, q};
    CHECK(edged_run(plan, 2, batch) == 0, "dequantize/quantize run");
    bad = 0;
    for (size_t i = 0; i < total; ++i) bad += f[i] != dq.scale * (float)(x[i] - dq.zero_point) || back.data[i] != x[i];
    CHECK(bad == 0 && guarded_intact(&back), "dequantize/quantize round trip: %d mismatches", bad);
    free(f); free(back.base); free(x); free(y.base);
  }
  /* Ties: the body rounds to even, the scalar tail away from zero. */
  float f[9] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.0f, 0.49f, 2.5f};
  int8_t out[9];
  edged_op q = blank_op(EDGED_OP_QUANTIZE);
  q.count = 9; q.in[0] = f; q.out = out; q.in_stride[0] = q.out_stride = 9;
  q.scale = 1.0f; q.zero_point = 0;
  CHECK(edged_run(&q, 1, 1) == 0, "quantize run");
  const int8_t want[9] = {0, 2, 2, 0, -2, -2, 3, 0, 3};
  CHECK(memcmp(out, want, 9) == 0, "quantize tie rounding");
}

static void test_softmax_logistic(void) {
  float table[256];
  edged_softmax_table(0.1f, 1.0f, table);
  CHECK(table[255] == 1.0f && table[254] == expf(-0.1f), "softmax table");
  int8_t x[2 * 10];
  fill_i8(x, sizeof(x));
  guarded y = guarded_new(sizeof(x));
  edged_op op = blank_op(EDGED_OP_SOFTMAX);
  op.in[0] = x; op.out = y.data; op.in_c = 10; op.count = 10; op.in_stride[0] = op.out_stride = 10;
  op.table = table; op.scale = 1.0f / 256.0f; op.output_offset = -128;
  CHECK(edged_run(&op, 1, 2) == 0, "softmax run");
  int bad = 0;
  for (int r = 0; r < 2; ++r) {
    int mx = -128;
    for (int j = 0; j < 10; ++j) mx = x[r * 10 + j] > mx ? x[r * 10 + j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < 10; ++j) sum += table[255 - mx + x[r * 10 + j]];
    const float inv = 1.0f / (sum * op.scale);
    for (int j = 0; j < 10; ++j) {
      int32_t e = (int32_t)roundf(table[255 - mx + x[r * 10 + j]] * inv) - 128;
      e = e > 127 ? 127 : e;
      bad += y.data[r * 10 + j] != e;
    }
  }
  CHECK(bad == 0 && guarded_intact(&y), "softmax: %d mismatches", bad);

  int8_t lut[256];
  edged_logistic_table(0.05f, 3, 1.0f / 256.0f, -128, lut);
  CHECK(lut[(uint8_t)3] == 0 && lut[(uint8_t)127] == 127 && lut[(uint8_t)-128] == -128, "logistic table");
  op = blank_op(EDGED_OP_LOGISTIC);
  op.in[0] = x; op.out = y.data; op.count = 20; op.table = lut; op.in_stride[0] = op.out_stride = 20;
  CHECK(edged_run(&op, 1, 1) == 0, "logistic run");
  bad = 0;
  for (int i = 0; i < 20; ++i) bad += y.data[i] != lut[(uint8_t)x[i]];
  CHECK(bad == 0, "logistic lookup");
  free(y.base);
}

static void test_validation(void) {
  edged_op ops[2];
  ops[0] = blank_op(EDGED_OP_COPY);
  int8_t buf[4] = {1, 2, 3, 4}, out[4];
  ops[0].in[0] = buf; ops[0].out = out; ops[0].count = 4;
  ops[0].in_stride[0] = ops[0].out_stride = 4;
  /* edged_execute runs what edged_validate accepted, and refuses only the
   * arguments it can check for nothing: no descriptors, batch below 1. */
  memset(out, 0, sizeof out);
  CHECK(edged_validate(ops, 1, 1) == 0 && edged_execute(ops, 1, 1) == 0 && memcmp(buf, out, 4) == 0,
        "execute a validated copy");
  CHECK(edged_execute(ops, 0, 1) == 0, "execute nothing");
  CHECK(edged_execute(NULL, 1, 1) == -1 && edged_execute(ops, 1, 0) == -1, "execute without ops or batch");
  ops[1] = blank_op(99);
  CHECK(edged_run(ops, 2, 1) == 2, "unknown kind must be rejected as op 2");
  ops[1] = blank_op(EDGED_OP_FULLY_CONNECTED); /* no weights */
  ops[1].in[0] = buf; ops[1].out = out; ops[1].in_h = 1; ops[1].in_c = 4; ops[1].out_c = 4;
  CHECK(edged_run(ops, 2, 1) == 2, "FC without packed weights must be rejected");
  CHECK(edged_run(ops, 1, 0) == 1, "batch 0 must be rejected");
  ops[0].act_min = 5; ops[0].act_max = 4; /* ignored by COPY */
  CHECK(edged_run(ops, 1, 1) == 0, "copy ignores act range");
  ops[0].out_stride = 3; /* one element short of `count` */
  CHECK(edged_run(ops, 1, 1) == 1, "an output stride shorter than the op writes must be rejected");
  ops[0].out_stride = 4;
  ops[1] = blank_op(EDGED_OP_CONCATENATION); /* output one slice shorter than its inputs */
  ops[1].n_in = 2; ops[1].outer = 1; ops[1].inner = 1; ops[1].axis_size[0] = ops[1].axis_size[1] = 2;
  ops[1].in[0] = ops[1].in[1] = buf; ops[1].out = out;
  ops[1].in_stride[0] = ops[1].in_stride[1] = 2; ops[1].out_stride = 3;
  CHECK(edged_run(ops, 2, 1) == 2, "a concatenation longer than its output must be rejected");
  ops[1].out_stride = 4; ops[1].outer = 0; ops[1].inner = 2; /* found by fuzz_descriptors: outer 0 runs as 1 */
  CHECK(edged_run(ops, 2, 1) == 2, "a concatenation with outer 0 is checked as outer 1");
  ops[1].axis_size[1] = INT32_MAX; ops[1].inner = INT32_MAX; ops[1].outer = INT32_MAX;
  CHECK(edged_run(ops, 2, 1) == 2, "sizes whose product wraps must be rejected");
  /* Found by fuzz_descriptors: a CONV_2D depth (filter_h * filter_w * in_c) that wraps
   * size_t to 0 divided by zero while sizing the scratch. */
  ops[1] = blank_op(EDGED_OP_CONV_2D);
  ops[1].in[0] = buf; ops[1].out = out;
  ops[1].in_h = ops[1].in_w = ops[1].out_h = ops[1].out_w = ops[1].out_c = 1;
  ops[1].stride_h = ops[1].stride_w = ops[1].dilation_h = ops[1].dilation_w = 1;
  ops[1].filter_h = ops[1].filter_w = ops[1].in_c = 1 << 30;
  CHECK(edged_scratch_size(&ops[1], 1) == 0, "a wrapping im2col depth needs no scratch");
  CHECK(edged_run(ops, 2, 1) == 2, "a CONV_2D depth past int32 must be rejected");
  CHECK(edged_s8_gemm_packed_size(EDGED_VARIANT_COUNT, 4, 4) == 0, "unknown variant size");
  CHECK(edged_s8_gemm_pack(7, (const int8_t*)buf, NULL, 0, 2, 2, out) == -1, "unknown variant pack");
}

/* MUL: a squeeze-excite broadcast [b, 2, 3, 20] x [b, 1, 1, 20] against the
 * scalar formula (the scalar form everywhere when the multiplier is small,
 * where both forms agree), writes stay inside the output, and descriptors
 * whose strides or shapes do not fit are rejected. HARD_SWISH: odd, zero at
 * the zero point, and its reluish saturation at large inputs. */
static void test_mul_hard_swish(void) {
  enum { B = 2, N = 2 * 3 * 20 };
  int8_t x[B * N], s[B * 20];
  fill_i8(x, sizeof(x));
  fill_i8(s, sizeof(s));
  guarded y = guarded_new(sizeof(x));
  edged_op op = blank_op(EDGED_OP_MUL);
  op.n_in = 2; op.in[0] = x; op.in[1] = s; op.out = y.data;
  op.in_stride[0] = N; op.in_stride[1] = 20; op.out_stride = N;
  op.bcast_rank = 4;
  const int32_t shape0[4] = {1, 2, 3, 20}, shape1[4] = {1, 1, 1, 20};
  for (int d = 0; d < 4; ++d) { op.bcast_shape[0][d] = shape0[d]; op.bcast_shape[1][d] = shape1[d]; }
  op.bcast_batched[0] = op.bcast_batched[1] = 1;
  op.in_offset[0] = 5; op.in_offset[1] = -3; op.output_offset = -2;
  op.multiplier = 1 << 30; op.shift = -8; op.act_min = -128; op.act_max = 127;
  CHECK(edged_run(&op, 1, B) == 0, "mul run");
  int bad = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < N; ++i) {
      const int32_t p = (x[b * N + i] + 5) * (s[b * 20 + i % 20] - 3);
      const int32_t e = edged_clamp(edged_mbqm(p, 1 << 30, -8) - 2, -128, 127);
      bad += y.data[b * N + i] != e;
    }
  CHECK(bad == 0 && guarded_intact(&y), "mul: %d mismatches", bad);
  op.in_stride[1] = N;
  CHECK(edged_run(&op, 1, B) == 1, "mul: stride of a full tensor for a broadcast operand rejected");
  op.in_stride[1] = 20;
  op.bcast_shape[1][2] = 2;
  CHECK(edged_run(&op, 1, B) == 1, "mul: 3 against 2 rejected");
  op.bcast_shape[1][2] = 1;
  op.bcast_shape[0][2] = 1; op.bcast_shape[1][1] = 2; op.bcast_shape[1][3] = 1;
  op.in_stride[0] = 40; op.in_stride[1] = 2; op.out_stride = 80;
  CHECK(edged_run(&op, 1, B) == 1, "mul: LiteRT's generic broadcast rejected");

  /* ADD of a scalar constant: runs of 5 (< 8) take the reference form only. */
  const int8_t scalar = -7;
  op = blank_op(EDGED_OP_ADD);
  op.n_in = 2; op.in[0] = x; op.in[1] = &scalar; op.out = y.data;
  op.in_stride[0] = 5; op.in_stride[1] = 0; op.out_stride = 5; op.count = 5;
  op.bcast_rank = 2;
  op.bcast_shape[0][0] = 1; op.bcast_shape[0][1] = 5; op.bcast_shape[1][0] = 1; op.bcast_shape[1][1] = 1;
  op.bcast_batched[0] = 1; op.bcast_batched[1] = 0;
  op.left_shift = 20; op.in_offset[0] = 3; op.in_offset[1] = -4;
  op.in_multiplier[0] = op.in_multiplier[1] = 1 << 30; op.in_shift[0] = op.in_shift[1] = -1;
  op.multiplier = 1 << 30; op.shift = -18; op.output_offset = 1; op.act_min = -128; op.act_max = 127;
  CHECK(edged_run(&op, 1, 1) == 0, "add broadcast run");
  bad = 0;
  for (int i = 0; i < 5; ++i) {
    const int32_t sa = edged_mbqm((x[i] + 3) * (1 << 20), 1 << 30, -1);
    const int32_t sc = edged_mbqm((scalar - 4) * (1 << 20), 1 << 30, -1);
    bad += y.data[i] != edged_clamp(edged_mbqm(sa + sc, 1 << 30, -18) + 1, -128, 127);
  }
  CHECK(bad == 0 && guarded_intact(&y), "add broadcast: %d mismatches", bad);
  op.in_stride[1] = 5;
  CHECK(edged_run(&op, 1, 1) == 1, "add broadcast: constant with a per-sample stride rejected");

  /* MINIMUM against the same broadcast constant, two samples. */
  op.in_stride[1] = 0;
  op.kind = EDGED_OP_MAXIMUM_MINIMUM;
  op.mode = EDGED_MINIMUM;
  CHECK(edged_run(&op, 1, 2) == 0, "minimum run");
  bad = 0;
  for (int i = 0; i < 10; ++i) bad += y.data[i] != (x[i] < scalar ? x[i] : scalar);
  CHECK(bad == 0 && guarded_intact(&y), "minimum: %d mismatches", bad);
  op.mode = 7;
  CHECK(edged_run(&op, 1, 2) == 1, "minimum: unknown mode rejected");

  op = blank_op(EDGED_OP_HARD_SWISH);
  int8_t xs[256];
  for (int i = 0; i < 256; ++i) xs[i] = (int8_t)(i - 128);
  op.in[0] = xs; op.out = y.data; op.count = 256; op.in_stride[0] = op.out_stride = 256;
  /* input and output scale 0.05, zero point 0: multipliers as HardSwishPrepare makes them */
  op.multiplier = 16384; op.shift = -6;            /* 1/128 */
  op.in_multiplier[0] = 17476; op.in_shift[0] = 3; /* 0.05 / 128 / (3 / 32768) = 4.27 */
  CHECK(edged_run(&op, 1, 1) == 0, "hard_swish run");
  CHECK(y.data[128] == 0, "hard_swish(0) = %d", y.data[128]);
  /* 6.35 -> 127 (saturated reluish), -6.4 -> 0, -1.0 -> -1/3 = -6.67 steps (the reference
   * implementation gives -7) */
  CHECK(y.data[255] == 127 && y.data[0] == 0 && y.data[128 - 20] == -7, "hard_swish values: %d %d %d",
        y.data[255], y.data[0], y.data[128 - 20]);
  /* Four rows (1024 elements) go through the 256-entry table: the same bytes as one by one. */
  int8_t xs4[1024], ys4[1024];
  for (int i = 0; i < 1024; ++i) xs4[i] = xs[(i * 7) % 256];
  op.in[0] = xs4; op.out = ys4;
  CHECK(edged_run(&op, 1, 4) == 0, "hard_swish table run");
  bad = 0;
  for (int i = 0; i < 1024; ++i) bad += ys4[i] != y.data[(i * 7) % 256];
  CHECK(bad == 0, "hard_swish: table and direct forms differ in %d of 1024", bad);
  op.in[0] = xs; op.out = y.data;
  op.shift = 1;
  CHECK(edged_run(&op, 1, 1) == 1, "hard_swish: positive output shift rejected");

  /* RELU_N1_TO_1 from scale 0.01 to 0.04: x / 4, ties away from zero, clamped to [-25, 25]. */
  op = blank_op(EDGED_OP_RELU);
  op.in[0] = xs; op.out = y.data; op.count = 256; op.in_stride[0] = op.out_stride = 256;
  op.multiplier = 1 << 30; op.shift = -1; op.act_min = -25; op.act_max = 25;
  CHECK(edged_run(&op, 1, 1) == 0, "relu run");
  CHECK(y.data[128 - 6] == -2 && y.data[128 + 6] == 2 && y.data[0] == -25 && y.data[255] == 25,
        "relu values: %d %d %d %d", y.data[128 - 6], y.data[128 + 6], y.data[0], y.data[255]);
  op.act_min = 30;
  CHECK(edged_run(&op, 1, 1) == 1, "relu: empty clamp range rejected");
  free(y.base);
}

int main(void) {
  print_variants();

  test_add();
  test_requantize_and_float();
  test_softmax_logistic();
  test_mul_hard_swish();
  test_validation();

  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
