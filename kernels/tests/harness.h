/* Shared pieces of the plain-C kernel test programs: the CHECK counter, a
 * seeded RNG, an independent model of TFLite's integer arithmetic and
 * guarded output buffers. Each test program is one translation unit that
 * includes this once. */
#ifndef EDGED_TEST_HARNESS_H
#define EDGED_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int g_passed, g_failed;

#define CHECK(cond, ...)                      \
  do {                                        \
    if (cond) {                               \
      ++g_passed;                             \
    } else {                                  \
      ++g_failed;                             \
      if (g_failed <= 30) {                   \
        printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        printf(__VA_ARGS__);                  \
        printf("\n");                         \
      }                                       \
    }                                         \
  } while (0)

/* ---- deterministic RNG (xorshift64*) ---------------------------------- */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static EDGED_UNUSED uint64_t rnd64(void) {
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 2685821657736338717ull;
}
static EDGED_UNUSED int32_t rnd_range(int32_t lo, int32_t hi) { /* inclusive */
  return lo + (int32_t)(rnd64() % (uint64_t)((int64_t)hi - lo + 1));
}
static EDGED_UNUSED int32_t rnd_i32(void) { return (int32_t)(uint32_t)rnd64(); }
static EDGED_UNUSED void fill_i8(int8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = (int8_t)rnd_range(-128, 127);
}

/* ---- independent model of the arithmetic ------------------------------ */
static EDGED_UNUSED int32_t wrap32(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

static EDGED_UNUSED int32_t model_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * b;
  const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* truncating, as gemmlowp */
}
static EDGED_UNUSED int32_t model_rdbypot(int32_t x, int e) { /* ties away from zero, in int64 */
  if (e == 0) return x;
  const int64_t d = (int64_t)1 << e;
  const int64_t q = (int64_t)x >= 0 ? ((int64_t)x + d / 2) / d : -((-(int64_t)x + d / 2) / d);
  return (int32_t)q;
}
static EDGED_UNUSED int32_t model_rhu(int32_t x, int e) { /* floor((x + 2^(e-1)) / 2^e) */
  if (e == 0) return x;
  const int64_t v = (int64_t)x + ((int64_t)1 << (e - 1));
  return (int32_t)(v >= 0 ? v >> e : -((-v + ((int64_t)1 << e) - 1) >> e));
}
/* One rounding of x*m / 2^(31 - shift), ties up, as floor division of the
 * exact product (|x*m| <= 2^62), saturated to int32. */
static EDGED_UNUSED int32_t model_single(int32_t x, int32_t m, int32_t shift) {
  const int64_t d = (int64_t)1 << (31 - shift), p = (int64_t)x * m;
  int64_t q = p / d; /* truncates toward zero; make it floor */
  if (p % d != 0 && p < 0) --q;
  const int64_t rem = p - q * d; /* in [0, d) */
  if (rem >= d / 2) ++q; /* ties up */
  return q > INT32_MAX ? INT32_MAX : (q < INT32_MIN ? INT32_MIN : (int32_t)q);
}
/* mode: 0 ties up (twice), 1 ties away (gemmlowp), 2 a single rounding. */
static EDGED_UNUSED int32_t model_mbqm(int32_t x, int32_t m, int32_t shift, int mode) {
  if (mode == 2) return model_single(x, m, shift);
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  const int32_t r = model_srdhm(wrap32((int64_t)x * ((int64_t)1 << left)), m);
  return mode ? model_rdbypot(r, right) : model_rhu(r, right);
}
static EDGED_UNUSED int8_t model_requant(int64_t acc, int32_t m, int32_t s, int32_t zp, int32_t lo, int32_t hi,
                            int rhaz) {
  int64_t v = (int64_t)model_mbqm(wrap32(acc), m, s, rhaz) + zp;
  v = wrap32(v);
  return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* ---- helpers ----------------------------------------------------------- */
static EDGED_UNUSED const char* variant_name(int v) {
  static const char* names[] = {"ref", "avx2", "avx512vnni", "neon", "neondot"};
  return v >= 0 && v < EDGED_VARIANT_COUNT ? names[v] : "?";
}

static EDGED_UNUSED int runnable(int v) {
  return (edged_cpu_variants() & (1u << v)) && edged_s8_gemm_get(v) != NULL;
}

/* The first line of a test program's output: the GEMM variants it checks. */
static EDGED_UNUSED void print_variants(void) {
  printf("cpu variants:");
  for (int i = 0; i < EDGED_VARIANT_COUNT; ++i)
    if (runnable(i)) printf(" %s", variant_name(i));
  printf(" (mask 0x%x)\n", edged_cpu_variants());
}

#define GUARD 32
#define GUARD_BYTE 0x5A

/* An output buffer with guard bytes on both sides. */
typedef struct {
  int8_t* base;
  int8_t* data;
  size_t n;
} guarded;
static EDGED_UNUSED guarded guarded_new(size_t n) {
  guarded g;
  g.n = n;
  g.base = (int8_t*)malloc(n + 2 * GUARD);
  memset(g.base, GUARD_BYTE, n + 2 * GUARD);
  g.data = g.base + GUARD;
  return g;
}
static EDGED_UNUSED int guarded_intact(const guarded* g) {
  for (size_t i = 0; i < GUARD; ++i)
    if ((uint8_t)g->base[i] != GUARD_BYTE || (uint8_t)g->data[g->n + i] != GUARD_BYTE) return 0;
  return 1;
}

/* Random requantization parameters: realistic ones, or (extreme) anything
 * the contract allows, to exercise every corner of the SIMD requantizers. */
static EDGED_UNUSED void random_requant(int32_t* mult, int32_t* shift, int32_t n, int extreme) {
  for (int32_t i = 0; i < n; ++i) {
    if (extreme) {
      const int pick = rnd_range(0, 9);
      mult[i] = pick == 0 ? INT32_MIN : pick == 1 ? INT32_MAX : pick == 2 ? 0 : rnd_i32();
      shift[i] = rnd_range(-31, 30);
    } else {
      mult[i] = rnd_range(1 << 30, INT32_MAX);
      shift[i] = rnd_range(-14, 1);
    }
  }
}

static EDGED_UNUSED void random_act(int32_t* lo, int32_t* hi) {
  if (rnd_range(0, 2) == 0) {
    *lo = -128;
    *hi = 127;
  } else {
    *lo = rnd_range(-128, 20);
    *hi = rnd_range(*lo, 127);
  }
}


static EDGED_UNUSED edged_op blank_op(int32_t kind) {
  edged_op op;
  memset(&op, 0, sizeof(op));
  op.kind = kind;
  op.act_min = -128;
  op.act_max = 127;
  return op;
}

#endif /* EDGED_TEST_HARNESS_H */
