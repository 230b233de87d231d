/* Plain-C tests of the pooling, MEAN and layout ops (PAD, CONCATENATION,
 * COPY) through edged_run(), against naive loops written here (no Python
 * needed). Buffers are allocated at their exact size and outputs get guard
 * bytes, so under -fsanitize=address any over-read or over-write fails
 * loudly.
 *
 * Prints "N passed, M failed" last and exits non-zero if anything failed.
 */
#include "harness.h"

static void test_pooling(void) {
  for (int t = 0; t < 80; ++t) {
    edged_op op = blank_op(t & 1 ? EDGED_OP_AVERAGE_POOL_2D : EDGED_OP_MAX_POOL_2D);
    op.in_h = rnd_range(1, 10); op.in_w = rnd_range(1, 10); op.in_c = op.out_c = rnd_range(1, 300);
    op.filter_h = rnd_range(1, 4); op.filter_w = rnd_range(1, 4);
    if (t % 10 == 1) { /* a long row window: sums over many taps */
      op.in_h = 1; op.in_w = rnd_range(20, 300); op.filter_h = 1; op.filter_w = op.in_w;
    }
    op.stride_h = rnd_range(1, 3); op.stride_w = rnd_range(1, 3);
    op.out_h = (op.in_h + op.stride_h - 1) / op.stride_h;
    op.out_w = (op.in_w + op.stride_w - 1) / op.stride_w;
    const int32_t th = (op.out_h - 1) * op.stride_h + op.filter_h - op.in_h;
    const int32_t tw = (op.out_w - 1) * op.stride_w + op.filter_w - op.in_w;
    op.pad_top = th > 0 ? th / 2 : 0; op.pad_left = tw > 0 ? tw / 2 : 0;
    random_act(&op.act_min, &op.act_max);
    const size_t in_n = (size_t)(op.in_h * op.in_w * op.in_c), out_n = (size_t)(op.out_h * op.out_w * op.out_c);
    int8_t* x = (int8_t*)malloc(in_n);
    fill_i8(x, in_n);
    guarded y = guarded_new(out_n);
    op.in[0] = x; op.out = y.data; op.in_stride[0] = (int64_t)in_n; op.out_stride = (int64_t)out_n;
    CHECK(edged_run(&op, 1, 1) == 0, "pool run");
    int bad = 0;
    for (int32_t oy = 0; oy < op.out_h; ++oy)
      for (int32_t ox = 0; ox < op.out_w; ++ox)
        for (int32_t c = 0; c < op.in_c; ++c) {
          int32_t mx = -128, sum = 0, cnt = 0;
          for (int32_t ky = 0; ky < op.filter_h; ++ky)
            for (int32_t kx = 0; kx < op.filter_w; ++kx) {
              const int32_t iy = oy * op.stride_h - op.pad_top + ky, ix = ox * op.stride_w - op.pad_left + kx;
              if (iy < 0 || iy >= op.in_h || ix < 0 || ix >= op.in_w) continue;
              const int32_t v = x[(iy * op.in_w + ix) * op.in_c + c];
              mx = v > mx ? v : mx;
              sum += v;
              ++cnt;
            }
          int32_t e;
          if (op.kind == EDGED_OP_MAX_POOL_2D) {
            e = mx;
          } else { /* round half away from zero, from the exact quotient */
            const double q = (double)sum / cnt;
            e = (int32_t)(q >= 0 ? floor(q + 0.5) : -floor(-q + 0.5));
          }
          e = e < op.act_min ? op.act_min : e > op.act_max ? op.act_max : e;
          bad += y.data[(oy * op.out_w + ox) * op.out_c + c] != e;
        }
    CHECK(bad == 0 && guarded_intact(&y), "pool kind %d: %d mismatches", op.kind, bad);
    free(x); free(y.base);
  }
}

/* The reciprocal division of AVERAGE_POOL_2D against C's integer division,
 * for every window size up to 2^16 taps: at each multiple of the count in
 * the reachable range and around the rounding points between them. */
static void test_rounded_average(void) {
  int bad = 0;
  long checked = 0;
  for (int32_t count = 1; count <= 65536; ++count) {
    const int32_t half = count / 2;
    const double inv = 1.0 / count;
    for (int32_t k = -128; k <= 128; k += count > 512 ? 8 : 1) {
      const int32_t at[] = {0, 1, -1, half, half - 1, half + 1, -half, -half - 1, -half + 1};
      for (size_t i = 0; i < sizeof at / sizeof at[0]; ++i) {
        const int64_t a64 = (int64_t)k * count + at[i];
        if (a64 < -128 * (int64_t)count || a64 > 127 * (int64_t)count) continue;
        const int32_t a = (int32_t)a64;
        const int32_t want = a > 0 ? (a + half) / count : (a - half) / count;
        bad += edged_rounded_average(a, half, inv) != want;
        ++checked;
      }
    }
  }
  CHECK(bad == 0, "rounded average: %d of %ld quotients differ from the integer division", bad, checked);
}

static void test_mean(void) {
  for (int t = 0; t < 60; ++t) {
    edged_op op = blank_op(EDGED_OP_MEAN);
    const int32_t batch = rnd_range(1, 3);
    op.mode = t & 1 ? EDGED_MEAN_OPTIMIZED : EDGED_MEAN_REFERENCE;
    op.outer = op.mode == EDGED_MEAN_OPTIMIZED ? 1 : rnd_range(0, 3);
    op.in_h = rnd_range(1, 8); op.in_w = rnd_range(1, 8); op.in_c = rnd_range(1, 300);
    op.multiplier = rnd_range(1 << 30, INT32_MAX); op.shift = rnd_range(-12, 0);
    op.input_offset = -rnd_range(-128, 127); op.output_offset = rnd_range(-128, 127);
    const size_t outer = op.outer ? (size_t)op.outer : 1, red = (size_t)(op.in_h * op.in_w);
    const size_t in_n = outer * red * (size_t)op.in_c, out_n = outer * (size_t)op.in_c;
    int8_t* x = (int8_t*)malloc(in_n * (size_t)batch);
    fill_i8(x, in_n * (size_t)batch);
    guarded y = guarded_new(out_n * (size_t)batch);
    op.in[0] = x; op.out = y.data; op.in_stride[0] = (int64_t)in_n; op.out_stride = (int64_t)out_n;
    CHECK(edged_run(&op, 1, batch) == 0, "mean run");
    int bad = 0;
    const int32_t body = op.in_c - op.in_c % 16;
    for (int32_t b = 0; b < batch; ++b)
      for (size_t o = 0; o < outer; ++o)
        for (int32_t c = 0; c < op.in_c; ++c) {
          int64_t sum = 0;
          for (size_t r = 0; r < red; ++r) sum += x[(size_t)b * in_n + (o * red + r) * (size_t)op.in_c + (size_t)c];
          int64_t v;
          if (op.mode == EDGED_MEAN_OPTIMIZED)
            v = model_mbqm((int32_t)sum, op.multiplier, op.shift, c >= body) + (int64_t)op.output_offset;
          else
            v = model_mbqm((int32_t)(sum + (int64_t)op.input_offset * (int64_t)red), op.multiplier, op.shift, 1) +
                (int64_t)op.output_offset;
          v = v < -128 ? -128 : v > 127 ? 127 : v;
          bad += y.data[(size_t)b * out_n + o * (size_t)op.in_c + (size_t)c] != (int8_t)v;
        }
    CHECK(bad == 0 && guarded_intact(&y), "mean mode %d: %d mismatches", op.mode, bad);
    free(x); free(y.base);
  }
}

static void test_layout_ops(void) {
  /* PAD: random geometries, every other one padding only h and w (one run
   * per row). */
  for (int t = 0; t < 40; ++t) {
    edged_op p = blank_op(EDGED_OP_PAD);
    p.in_h = rnd_range(1, 5); p.in_w = rnd_range(1, 9); p.in_c = rnd_range(1, 9);
    for (int k = 0; k < 3; ++k) {
      p.pad_before[k] = (k == 2 && t % 2) ? 0 : rnd_range(0, 3);
      p.pad_after[k] = (k == 2 && t % 2) ? 0 : rnd_range(0, 3);
    }
    p.out_h = p.in_h + p.pad_before[0] + p.pad_after[0];
    p.out_w = p.in_w + p.pad_before[1] + p.pad_after[1];
    p.out_c = p.in_c + p.pad_before[2] + p.pad_after[2];
    p.output_offset = rnd_range(-128, 127);
    const int batch = rnd_range(1, 2);
    const size_t in_n = (size_t)(p.in_h * p.in_w * p.in_c), out_n = (size_t)(p.out_h * p.out_w * p.out_c);
    int8_t* px = (int8_t*)malloc(in_n * (size_t)batch);
    fill_i8(px, in_n * (size_t)batch);
    guarded py = guarded_new(out_n * (size_t)batch);
    p.in[0] = px; p.out = py.data; p.in_stride[0] = (int64_t)in_n; p.out_stride = (int64_t)out_n;
    CHECK(edged_run(&p, 1, batch) == 0, "pad run");
    int bad = 0;
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < p.out_h; ++h)
        for (int w = 0; w < p.out_w; ++w)
          for (int c = 0; c < p.out_c; ++c) {
            const int ih = h - p.pad_before[0], iw = w - p.pad_before[1], ic = c - p.pad_before[2];
            const int inside = ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w && ic >= 0 && ic < p.in_c;
            const int8_t e = inside ? px[(size_t)b * in_n + (size_t)((ih * p.in_w + iw) * p.in_c + ic)]
                                    : (int8_t)p.output_offset;
            bad += py.data[(size_t)b * out_n + (size_t)((h * p.out_w + w) * p.out_c + c)] != e;
          }
    CHECK(bad == 0 && guarded_intact(&py), "pad %dx%dx%d: %d mismatches", p.in_h, p.in_w, p.in_c, bad);
    free(py.base); free(px);
  }

  edged_op op;
  int bad;
  /* CONCATENATION of three inputs along the middle of [2, a_k, 3]. */
  int8_t a0[2 * 1 * 3], a1[2 * 4 * 3], a2[2 * 2 * 3];
  fill_i8(a0, sizeof(a0)); fill_i8(a1, sizeof(a1)); fill_i8(a2, sizeof(a2));
  op = blank_op(EDGED_OP_CONCATENATION);
  op.n_in = 3; op.outer = 2; op.inner = 3;
  op.axis_size[0] = 1; op.axis_size[1] = 4; op.axis_size[2] = 2;
  op.in[0] = a0; op.in[1] = a1; op.in[2] = a2;
  guarded cy = guarded_new(2 * 7 * 3);
  op.out = cy.data;
  op.in_stride[0] = 6; op.in_stride[1] = 24; op.in_stride[2] = 12; op.out_stride = 42;
  CHECK(edged_run(&op, 1, 1) == 0, "concat run");
  bad = 0;
  for (int o = 0; o < 2; ++o)
    for (int a = 0; a < 7; ++a)
      for (int i = 0; i < 3; ++i) {
        const int8_t e = a < 1 ? a0[(o * 1 + a) * 3 + i] : a < 5 ? a1[(o * 4 + a - 1) * 3 + i] : a2[(o * 2 + a - 5) * 3 + i];
        bad += cy.data[(o * 7 + a) * 3 + i] != e;
      }
  CHECK(bad == 0 && guarded_intact(&cy), "concat: %d mismatches", bad);
  free(cy.base);

  /* An empty CONCATENATION with a huge outer extent (the descriptor fuzzer's
   * instrumented build once spun through its 2^31 zero-byte copies). */
  op = blank_op(EDGED_OP_CONCATENATION);
  op.n_in = 2; op.outer = INT32_MAX; op.inner = 5;
  op.in[0] = a0; op.in[1] = a1; op.out = a2;
  CHECK(edged_run(&op, 1, 3) == 0, "empty concat run");

  /* COPY of float elements. */
  float src[6] = {1, 2, 3, 4, 5, 6}, dst[6] = {0};
  op = blank_op(EDGED_OP_COPY);
  op.in[0] = src; op.out = dst; op.count = 3; op.elem_size = 4; op.in_stride[0] = op.out_stride = 3;
  CHECK(edged_run(&op, 1, 2) == 0 && memcmp(src, dst, sizeof(src)) == 0, "copy");
}

int main(void) {
  print_variants();

  test_pooling();
  test_rounded_average();
  test_mean();
  test_layout_ops();

  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
