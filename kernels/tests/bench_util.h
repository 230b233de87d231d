/* Timing helpers of the plain-C micro-benchmarks (bench_gemm, bench_spmm). */
#ifndef EDGED_BENCH_UTIL_H
#define EDGED_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static EDGED_UNUSED double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static EDGED_UNUSED int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

#endif /* EDGED_BENCH_UTIL_H */
