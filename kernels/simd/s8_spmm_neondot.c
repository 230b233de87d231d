/* Block-sparse int8 GEMM, neondot: placeholder that runs the reference until
 * the neondot micro-kernels land. */
#include "internal.h"

#if defined(__aarch64__)
void edged_s8_spmm_neondot(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
}
#else
typedef int edged_s8_spmm_neondot_unused;
#endif
