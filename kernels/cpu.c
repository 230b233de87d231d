/* Run-time CPU feature detection: which s8_gemm variants may run here.
 *
 * The planner packs weights for the best variant this reports; edged_run()
 * re-checks so a plan built on another machine fails cleanly instead of
 * hitting an illegal instruction. */
#include "internal.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#endif

static uint32_t detect(void) {
  uint32_t v = 1u << EDGED_VARIANT_REF;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  /* libgcc's cpu model also checks XCR0, so AVX2/AVX-512 here means the OS
   * saves the wide registers too. */
  if (__builtin_cpu_supports("avx2")) v |= 1u << EDGED_VARIANT_AVX2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    v |= 1u << EDGED_VARIANT_AVX512VNNI;
#elif defined(__aarch64__)
  v |= 1u << EDGED_VARIANT_NEON; /* Advanced SIMD is mandatory on AArch64 */
#if defined(__linux__)
  if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) v |= 1u << EDGED_VARIANT_NEONDOT;
#elif defined(__APPLE__)
  v |= 1u << EDGED_VARIANT_NEONDOT; /* every Apple arm64 core has sdot */
#endif
#endif
  return v;
}

uint32_t edged_cpu_variants(void) {
  /* Benign race: every thread computes the same value. */
  static volatile uint32_t cached = 0;
  uint32_t v = cached;
  if (v == 0) {
    v = detect();
    cached = v;
  }
  return v;
}
