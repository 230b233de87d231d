/* Block-sparse int8 GEMM, neon: placeholder that runs the reference until
 * the neon micro-kernels land. */
#include "internal.h"

#if defined(__aarch64__)
void edged_s8_spmm_neon(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
}
#else
typedef int edged_s8_spmm_neon_unused;
#endif
