/* Block-sparse GEMV/GEMM micro-benchmark per s8_spmm variant (not a test):
 * median time of an FC layer with randomly pruned blocks, weights already
 * packed, next to the dense s8_gemm of the same variant on the same layer.
 *
 *   bench_spmm                      every layer, batch, sparsity and block shape
 *   bench_spmm N K M [RxC [S]]      one layer (out_c N, depth K, batch M), optionally
 *                                   one block shape and sparsity (percent)
 *
 * Each number is the median of repeated runs (about 20 ms of them, at least
 * 5), caches warm, as bench_gemm measures the dense kernels.
 */
#define _POSIX_C_SOURCE 199309L
#include "tests/bench_util.h"

static const char* kNames[] = {"ref", "avx2", "avx512vnni", "neon", "neondot"};
static const int32_t kShapes[][2] = {{1, 1}, {1, 4}, {1, 16}, {4, 4}, {8, 4}, {16, 4}};
#define N_SHAPES ((int)(sizeof(kShapes) / sizeof(kShapes[0])))
static const int kSparsity[] = {50, 70, 90, 95};
#define N_SPARSITY ((int)(sizeof(kSparsity) / sizeof(kSparsity[0])))
#define MAX_REPS 20000

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void) {
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return (uint32_t)((g_rng * 2685821657736338717ull) >> 32);
}

typedef struct {
  int32_t m, n, k;
  int8_t* a;
  int8_t* c;
  const edged_requant* rq;
} layer;

/* Median microseconds of f on `packed`, repeated for about 20 ms. */
static double time_fn(edged_s8_gemm_fn f, const void* packed, const layer* L) {
  static double t[MAX_REPS];
  const double start = now_us();
  f((size_t)L->m, L->a, (size_t)L->k, packed, L->c, (size_t)L->n, L->rq);
  const double once = now_us() - start + 0.05;
  int reps = (int)(20000.0 / once);
  reps = reps < 5 ? 5 : reps > MAX_REPS ? MAX_REPS : reps;
  for (int i = 0; i < reps / 10 + 2; ++i) /* warm up */
    f((size_t)L->m, L->a, (size_t)L->k, packed, L->c, (size_t)L->n, L->rq);
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_us();
    f((size_t)L->m, L->a, (size_t)L->k, packed, L->c, (size_t)L->n, L->rq);
    t[i] = now_us() - t0;
  }
  qsort(t, (size_t)reps, sizeof(double), cmp_double);
  return t[reps / 2];
}

static int usable(int v) {
  return (edged_cpu_variants() & (1u << v)) && edged_s8_gemm_get(v) && edged_s8_spmm_get(v);
}

/* Block-CSR of a random [n, k] matrix with `sparsity` percent of its
 * (br x bc) blocks pruned, packed; the dense matrix (pruned blocks zero) in w. */
static void* make_sparse(int32_t n, int32_t k, int32_t br, int32_t bc, int sparsity,
                         const int32_t* bias, int8_t* w) {
  const int32_t nr = (n + br - 1) / br, nc = (k + bc - 1) / bc;
  int32_t* row_ptr = (int32_t*)malloc(((size_t)nr + 1) * 4);
  int32_t* col_idx = (int32_t*)malloc((size_t)nr * (size_t)nc * 4 + 4);
  int8_t* values = (int8_t*)malloc((size_t)nr * (size_t)nc * (size_t)(br * bc) + 1);
  int64_t nnz = 0;
  memset(w, 0, (size_t)n * (size_t)k);
  row_ptr[0] = 0;
  for (int32_t i = 0; i < nr; ++i) {
    for (int32_t q = 0; q < nc; ++q) {
      if ((int)(rnd() % 100) < sparsity) continue;
      int8_t* blk = values + (size_t)nnz * (size_t)(br * bc);
      for (int32_t j = 0; j < br; ++j)
        for (int32_t t = 0; t < bc; ++t) {
          const int32_t o = i * br + j, d = q * bc + t;
          const int8_t v = (o < n && d < k) ? (int8_t)(rnd() & 0xff) : 0;
          blk[j * bc + t] = v;
          if (o < n && d < k) w[(size_t)o * (size_t)k + (size_t)d] = v;
        }
      col_idx[nnz++] = q;
    }
    row_ptr[i + 1] = (int32_t)nnz;
  }
  void* packed = malloc(edged_s8_spmm_packed_size(n, k, br, bc, nnz));
  if (edged_s8_spmm_pack(n, k, br, bc, row_ptr, col_idx, nnz, values, bias, -3, packed) != 0) {
    fprintf(stderr, "pack failed\n");
    exit(1);
  }
  free(row_ptr);
  free(col_idx);
  free(values);
  return packed;
}

static void bench_layer(int32_t m, int32_t n, int32_t k, int only_shape, int only_sparsity) {
  layer L = {m, n, k, NULL, NULL, NULL};
  L.a = (int8_t*)malloc((size_t)m * (size_t)k);
  L.c = (int8_t*)malloc((size_t)m * (size_t)n);
  int8_t* w = (int8_t*)malloc((size_t)n * (size_t)k);
  int32_t *bias = (int32_t*)malloc((size_t)n * 4), *mult = (int32_t*)malloc((size_t)n * 4),
          *shift = (int32_t*)malloc((size_t)n * 4);
  for (size_t i = 0; i < (size_t)m * (size_t)k; ++i) L.a[i] = (int8_t)(rnd() & 0xff);
  for (int32_t o = 0; o < n; ++o) {
    bias[o] = (int32_t)(rnd() % 2000) - 1000;
    mult[o] = 1500000000;
    shift[o] = -9;
  }
  const edged_requant rq = {mult, shift, -5, -128, 127, 0, 0};
  L.rq = &rq;

  /* Dense baseline per variant, on a fully random matrix. */
  double dense[EDGED_VARIANT_COUNT] = {0};
  for (size_t i = 0; i < (size_t)n * (size_t)k; ++i) w[i] = (int8_t)(rnd() & 0xff);
  printf("\nout_c=%d depth=%d batch=%d   dense gemm:", n, k, m);
  for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
    if (!usable(v)) continue;
    void* packed = malloc(edged_s8_gemm_packed_size(v, n, k));
    edged_s8_gemm_pack(v, w, bias, -3, n, k, packed);
    dense[v] = time_fn(edged_s8_gemm_get(v), packed, &L);
    printf("  %s %.2f us", kNames[v], dense[v]);
    free(packed);
  }
  printf("\n  sparsity block ");
  for (int v = 0; v < EDGED_VARIANT_COUNT; ++v)
    if (usable(v)) printf(" %12s us (x dense)", kNames[v]);
  printf("\n");

  for (int si = 0; si < N_SPARSITY; ++si) {
    if (only_sparsity >= 0 && kSparsity[si] != only_sparsity) continue;
    for (int b = 0; b < N_SHAPES; ++b) {
      if (only_shape >= 0 && b != only_shape) continue;
      void* packed = make_sparse(n, k, kShapes[b][0], kShapes[b][1], kSparsity[si], bias, w);
      printf("  %6d%%  %2dx%-2d ", kSparsity[si], kShapes[b][0], kShapes[b][1]);
      for (int v = 0; v < EDGED_VARIANT_COUNT; ++v) {
        if (!usable(v)) continue;
        const double t = time_fn(edged_s8_spmm_get(v), packed, &L);
        printf(" %12.2f us (%5.2fx)", t, dense[v] / t);
      }
      printf("\n");
      fflush(stdout);
      free(packed);
    }
  }
  free(L.a); free(L.c); free(w); free(bias); free(mult); free(shift);
}

int main(int argc, char** argv) {
  if (argc >= 4) {
    int shape = -1, sparsity = -1;
    if (argc >= 5) {
      int br = 0, bc = 0;
      if (sscanf(argv[4], "%dx%d", &br, &bc) != 2) {
        fprintf(stderr, "block shape as RxC, e.g. 16x4\n");
        return 2;
      }
      for (int b = 0; b < N_SHAPES; ++b)
        if (kShapes[b][0] == br && kShapes[b][1] == bc) shape = b;
      if (shape < 0) {
        fprintf(stderr, "block shape %s is not one of the benchmarked ones\n", argv[4]);
        return 2;
      }
    }
    if (argc >= 6) sparsity = atoi(argv[5]);
    bench_layer(atoi(argv[3]), atoi(argv[1]), atoi(argv[2]), shape, sparsity);
    return 0;
  }
  static const int32_t layers[][2] = {{1024, 1024}, {4096, 1024}, {1024, 4096}};
  for (int l = 0; l < 3; ++l) {
    bench_layer(1, layers[l][0], layers[l][1], -1, -1);
    bench_layer(16, layers[l][0], layers[l][1], -1, -1);
  }
  return 0;
}
