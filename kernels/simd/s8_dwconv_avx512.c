/* DEPTHWISE_CONV_2D channel blocks of 32 for x86-64 with AVX-512 (F, BW,
 * VNNI), at depth multiplier 1: the AVX2 kernel's method (s8_dwconv_avx2.c)
 * on twice the channels. Two taps' (x + input_offset) and weights, widened
 * to int16 and interleaved per channel, meet in one vpdpwssd, which adds
 * x0*w0 + x1*w1 per channel to an int32 accumulator (each product is at most
 * 255 * 128 in magnitude, so nothing wraps). The in-lane unpacks leave the
 * accumulators as [c0-3 | c8-11 | c16-19 | c24-27] and [c4-7 | c12-15 |
 * c20-23 | c28-31]; two two-source permutes restore channel order.
 *
 * The AVX2 kernel drives the pixels and the taps and calls in here for the
 * channels below the last multiple of 32, all of which round ties up (they
 * lie below out_c - out_c % 8); it does the rest itself.
 */
#include <stdlib.h>

#include "internal.h"

#if defined(__x86_64__)
#include "avx512_requant.h"

#define DW512_STACK_BLOCKS 8 /* 256 channels of constants on the caller's stack */

struct edged_dw512 {
  rq16* params; /* two per 32-channel block */
  size_t blocks;
  const int8_t* w;
  const int32_t* bias;
  int16_t input_offset;
  edged_requant rq;
  void* raw; /* heap block, when the caller's buffer is too small */
};

/* acc += a0*b0 + a1*b1 per int32 lane (int16 pairs), accumulating in place
 * (see edged_dpbusd for why not the intrinsic). */
VNNI_INLINE __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

VNNI_INLINE __m512i load_x32(const int8_t* p, __m512i offset) {
  return _mm512_add_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)p)), offset);
}

VNNI_INLINE __m512i load_w32(const int8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)p));
}

size_t edged_dw512_size(size_t out_c) {
  return sizeof(struct edged_dw512) + 64 + 2 * (out_c / 32) * sizeof(rq16);
}

VNNI_TARGET edged_dw512* edged_dw512_init(const edged_op* op, void* buf, size_t buf_size) {
  const size_t c_all = (size_t)op->out_c, blocks = c_all / 32;
  if (op->depth_multiplier != 1 || blocks == 0) return NULL;
  const size_t need = edged_dw512_size(c_all);
  void* raw = NULL;
  if (buf == NULL || buf_size < need) {
    raw = malloc(need);
    if (raw == NULL) return NULL;
    buf = raw;
  }
  edged_dw512* k = (edged_dw512*)buf;
  k->params = (rq16*)(((uintptr_t)(k + 1) + 63) & ~(uintptr_t)63);
  k->blocks = blocks;
  k->w = (const int8_t*)op->weights;
  k->bias = op->bias;
  k->input_offset = (int16_t)op->input_offset;
  const edged_requant rq = {op->out_multiplier, op->out_shift, op->output_offset, op->act_min, op->act_max, 0, 0};
  k->rq = rq;
  k->raw = raw;
  for (size_t g = 0; g < 2 * blocks; ++g) rq16_load(&k->params[g], &k->rq, 16 * g, c_all);
  return k;
}

void edged_dw512_free(edged_dw512* k) {
  if (k != NULL) free(k->raw);
}

VNNI_TARGET void edged_dw512_pixel(const edged_dw512* k, const int8_t* x, const size_t* x_off,
                                   const size_t* w_off, size_t taps, int8_t* yp) {
  const __m512i io = _mm512_set1_epi16(k->input_offset);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i idx_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i idx_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  for (size_t blk = 0; blk < k->blocks; ++blk) {
    const size_t c = 32 * blk;
    __m512i acc_a = zero, acc_b = zero;
    size_t t = 0;
    for (; t + 2 <= taps; t += 2) {
      const __m512i xa = load_x32(x + x_off[t] + c, io), xb = load_x32(x + x_off[t + 1] + c, io);
      const __m512i wa = load_w32(k->w + w_off[t] + c), wb = load_w32(k->w + w_off[t + 1] + c);
      acc_a = dpwssd(acc_a, _mm512_unpacklo_epi16(xa, xb), _mm512_unpacklo_epi16(wa, wb));
      acc_b = dpwssd(acc_b, _mm512_unpackhi_epi16(xa, xb), _mm512_unpackhi_epi16(wa, wb));
    }
    if (t < taps) { /* odd tap count: pair the last tap with zeros */
      const __m512i xa = load_x32(x + x_off[t] + c, io), wa = load_w32(k->w + w_off[t] + c);
      acc_a = dpwssd(acc_a, _mm512_unpacklo_epi16(xa, zero), _mm512_unpacklo_epi16(wa, zero));
      acc_b = dpwssd(acc_b, _mm512_unpackhi_epi16(xa, zero), _mm512_unpackhi_epi16(wa, zero));
    }
    __m512i lo = _mm512_permutex2var_epi64(acc_a, idx_lo, acc_b); /* channels c .. c+15 */
    __m512i hi = _mm512_permutex2var_epi64(acc_a, idx_hi, acc_b); /* c+16 .. c+31 */
    if (k->bias) {
      lo = _mm512_add_epi32(lo, _mm512_loadu_si512(k->bias + c));
      hi = _mm512_add_epi32(hi, _mm512_loadu_si512(k->bias + c + 16));
    }
    rq16_store(&k->params[2 * blk], lo, &k->rq, yp + c);
    rq16_store(&k->params[2 * blk + 1], hi, &k->rq, yp + c + 16);
  }
}

#else
typedef int edged_s8_dwconv_avx512_unused;
#endif
