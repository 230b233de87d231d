/* The vector requantization helpers (simd/avx512_requant.h, rq16; and
 * simd/avx2_requant.h, rq8) against the independent model of harness.h,
 * over the whole input domain the kernels accept: any int32 accumulator,
 * multipliers with and without the top bit pattern TFLite produces, shifts
 * in [-31, 30], output offsets inside and outside int8, narrow activation
 * ranges, both roundings and partial blocks. The GEMM and convolution tests
 * reach these helpers only with the value ranges real layers produce. */
#include "harness.h"

#if defined(__x86_64__)
#include "simd/avx2_requant.h"
#include "simd/avx512_requant.h"

#define LANES 16

typedef struct {
  int32_t mult[LANES], shift[LANES];
  edged_requant rq;
  size_t valid;
} rq_case;

static int32_t pick_acc(int kind) {
  switch (kind) {
    case 0: return rnd_i32();
    case 1: return rnd_range(-2000000, 2000000);
    case 2: return rnd_range(-70000, 70000);
    default: return rnd64() % 4 ? rnd_range(-300, 300) : (rnd64() % 2 ? INT32_MIN : INT32_MAX);
  }
}

static void pick_case(rq_case* c) {
  for (int i = 0; i < LANES; ++i) {
    const int kind = (int)(rnd64() % 10);
    c->mult[i] = kind < 7 ? rnd_range(1 << 30, INT32_MAX) : kind < 9 ? rnd_range(0, INT32_MAX)
                                                                      : (rnd64() % 2 ? INT32_MIN : -rnd_range(1, INT32_MAX));
    c->shift[i] = rnd64() % 4 ? -rnd_range(0, 18) : rnd_range(-31, 30);
  }
  const int uniform_shift = rnd64() % 2;
  if (uniform_shift)
    for (int i = 1; i < LANES; ++i) c->shift[i] = c->shift[0];
  c->rq.multiplier = c->mult;
  c->rq.shift = c->shift;
  c->rq.output_offset = rnd64() % 5 ? rnd_range(-128, 127) : rnd_range(-5000, 5000);
  c->rq.act_min = rnd64() % 2 ? -128 : rnd_range(-128, 127);
  c->rq.act_max = rnd64() % 2 ? 127 : rnd_range(c->rq.act_min, 127);
  c->rq.rhaz = (int32_t)(rnd64() % 2);
  c->rq.single_rounding = rnd64() % 8 == 0;
  c->valid = rnd64() % 3 ? LANES : (size_t)rnd_range(1, LANES);
}

static int8_t want(const rq_case* c, int lane, int32_t acc) {
  const int mode = c->rq.single_rounding ? 2 : c->rq.rhaz;
  return model_requant(acc, c->mult[lane], c->shift[lane], c->rq.output_offset, c->rq.act_min, c->rq.act_max, mode);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void check_rq16(const rq_case* c, int kind) {
  rq16 p;
  rq16_load(&p, &c->rq, 0, c->valid);
  for (int rep = 0; rep < 64; ++rep) {
    int32_t acc[LANES];
    int8_t out[LANES];
    for (int i = 0; i < LANES; ++i) acc[i] = pick_acc(kind);
    _mm_storeu_si128((__m128i*)out, rq16_apply(&p, _mm512_loadu_si512(acc), &c->rq));
    if (rq16_is_up(&p, &c->rq)) { /* the tiles' branch-free form must agree lane for lane */
      const rq16_up u = rq16_up_of(&p, &c->rq);
      int8_t up[LANES];
      _mm_storeu_si128((__m128i*)up, u.full_range ? rq16_up_apply(&u, _mm512_loadu_si512(acc), 1)
                                                  : rq16_up_apply(&u, _mm512_loadu_si512(acc), 0));
      for (size_t i = 0; i < c->valid; ++i) CHECK(up[i] == out[i], "rq16_up lane %zu: %d vs %d", i, up[i], out[i]);
    }
    for (size_t i = 0; i < c->valid; ++i)
      CHECK(out[i] == want(c, (int)i, acc[i]), "rq16 acc %d m %d shift %d zp %d act [%d, %d] rhaz %d single %d: %d, want %d",
            acc[i], c->mult[i], c->shift[i], c->rq.output_offset, c->rq.act_min, c->rq.act_max, c->rq.rhaz,
            c->rq.single_rounding, out[i], want(c, (int)i, acc[i]));
  }
}

__attribute__((target("avx2"))) static void check_rq8(const rq_case* c, int kind) {
  rq8 p;
  rq8_load(&p, &c->rq, 0, c->valid < 8 ? c->valid : 8);
  for (int rep = 0; rep < 64; ++rep) {
    int32_t acc[8], got[8];
    for (int i = 0; i < 8; ++i) acc[i] = pick_acc(kind);
    _mm256_storeu_si256((__m256i*)got, rq8_apply(&p, _mm256_loadu_si256((const __m256i*)acc), &c->rq));
    for (size_t i = 0; i < p.valid; ++i)
      CHECK((int8_t)got[i] == want(c, (int)i, acc[i]), "rq8 acc %d m %d shift %d zp %d rhaz %d: %d, want %d", acc[i],
            c->mult[i], c->shift[i], c->rq.output_offset, c->rq.rhaz, got[i], want(c, (int)i, acc[i]));
  }
}

int main(void) {
  const uint32_t cpu = edged_cpu_variants();
  const int avx512 = (cpu >> EDGED_VARIANT_AVX512VNNI) & 1, avx2 = (cpu >> EDGED_VARIANT_AVX2) & 1;
  printf("requantization helpers:%s%s\n", avx2 ? " rq8 (avx2)" : "", avx512 ? " rq16 (avx512vnni)" : "");
  for (int t = 0; t < 3000; ++t) {
    rq_case c;
    pick_case(&c);
    const int kind = (int)(rnd64() % 4);
    if (avx512) check_rq16(&c, kind);
    if (avx2) check_rq8(&c, kind);
  }
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed != 0;
}

#else
int main(void) {
  printf("requantization helpers: none on this architecture\n%d passed, %d failed\n", g_passed, g_failed);
  return 0;
}
#endif
