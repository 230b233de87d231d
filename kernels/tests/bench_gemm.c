/* GEMV/GEMM micro-benchmark per s8_gemm variant (not a test): median time
 * of many runs of an FC layer, weights already packed. */
#define _POSIX_C_SOURCE 199309L
#include "tests/bench_util.h"

static void bench(int32_t m, int32_t n, int32_t k, int reps) {
  static const char* names[] = {"ref", "avx2", "avx512vnni", "neon", "neondot"};
  int8_t* a = (int8_t*)malloc((size_t)m * (size_t)k);
  int8_t* w = (int8_t*)malloc((size_t)n * (size_t)k);
  int32_t *bias = (int32_t*)malloc((size_t)n * 4), *mult = (int32_t*)malloc((size_t)n * 4),
          *shift = (int32_t*)malloc((size_t)n * 4);
  int8_t* c = (int8_t*)malloc((size_t)m * (size_t)n);
  for (size_t i = 0; i < (size_t)m * (size_t)k; ++i) a[i] = (int8_t)(rand() & 0xff);
  for (size_t i = 0; i < (size_t)n * (size_t)k; ++i) w[i] = (int8_t)(rand() & 0xff);
  for (int32_t o = 0; o < n; ++o) {
    bias[o] = rand() % 2000 - 1000;
    mult[o] = 1500000000;
    shift[o] = -9;
  }
  const edged_requant rq = {mult, shift, -5, -128, 127, 0, 0};
  double* t = (double*)malloc((size_t)reps * sizeof(double));
  for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
    if (!(edged_cpu_variants() & (1u << v)) || !edged_s8_gemm_get(v)) continue;
    void* packed = malloc(edged_s8_gemm_packed_size(v, n, k));
    edged_s8_gemm_pack(v, w, bias, -3, n, k, packed);
    const edged_s8_gemm_fn f = edged_s8_gemm_get(v);
    const int r = v == EDGED_VARIANT_REF ? reps / 10 + 1 : reps;
    for (int i = 0; i < 20; ++i) f((size_t)m, a, (size_t)k, packed, c, (size_t)n, &rq);
    for (int i = 0; i < r; ++i) {
      const double t0 = now_us();
      f((size_t)m, a, (size_t)k, packed, c, (size_t)n, &rq);
      t[i] = now_us() - t0;
    }
    qsort(t, (size_t)r, sizeof(double), cmp_double);
    const double gops = 2.0 * m * n * k / (t[r / 2] * 1e3);
    printf("m=%-4d n=%-5d k=%-5d %-11s median %9.2f us  min %9.2f us  (%.1f GOP/s)\n", m, n, k,
           names[v], t[r / 2], t[0], gops);
    free(packed);
  }
  free(t); free(a); free(w); free(bias); free(mult); free(shift); free(c);
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 2000;
  bench(1, 1024, 1024, reps);
  bench(1, 256, 1024, reps);
  bench(1, 1000, 1280, reps);
  bench(8, 1024, 1024, reps / 4);
  bench(196, 128, 1152, reps / 20); /* a 3x3x128->128 conv on 14x14 */
  return 0;
}
