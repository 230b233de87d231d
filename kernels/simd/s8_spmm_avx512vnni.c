/* Block-sparse int8 GEMM, avx512vnni: placeholder that runs the reference until
 * the avx512vnni micro-kernels land. */
#include "internal.h"

#if defined(__x86_64__)
void edged_s8_spmm_avx512vnni(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                        int8_t* c, size_t c_stride, const edged_requant* rq) {
  edged_s8_spmm_ref(m, a, a_stride, packed, c, c_stride, rq);
}
#else
typedef int edged_s8_spmm_avx512vnni_unused;
#endif
