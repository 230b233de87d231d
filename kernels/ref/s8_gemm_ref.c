/* Portable int8 GEMM over the REF packing: the semantic baseline every SIMD
 * variant is tested against, and the fallback on CPUs with none of them. */
#include "internal.h"

void edged_s8_gemm_ref(size_t m, const int8_t* a, size_t a_stride, const void* packed,
                       int8_t* c, size_t c_stride, const edged_requant* rq) {
  const edged_packed_header* h = (const edged_packed_header*)packed;
  const size_t n = (size_t)h->out_c, k = (size_t)h->depth;
  const int32_t* term = edged_packed_terms(packed);
  const int8_t* w = edged_packed_weights(packed);

  for (size_t r = 0; r < m; ++r) {
    const int8_t* x = a + r * a_stride;
    int8_t* y = c + r * c_stride;
    for (size_t o = 0; o < n; ++o) {
      const int8_t* wr = w + o * k;
      /* Products are < 2^15 and depth is far below 2^16 in practice; the sum
       * is done in uint32 anyway so a pathological depth wraps like TFLite. */
      uint32_t acc = (uint32_t)term[o];
      for (size_t d = 0; d < k; ++d) acc += (uint32_t)((int32_t)x[d] * (int32_t)wr[d]);
      y[o] = edged_requant1((int32_t)acc, rq->multiplier[o], rq->shift[o], rq->output_offset,
                            rq->act_min, rq->act_max, edged_rq_mode(rq));
    }
  }
}
