/* Block-sparse int8 GEMM, avx2: placeholder that runs the reference until
 * the avx2 micro-kernels land. */
#include "internal.h"

#if defined(__x86_64__)
void edged_s8_spmm_avx2(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
}
#else
typedef int edged_s8_spmm_avx2_unused;
#endif
