/* DEPTHWISE_CONV_2D for x86-64 with AVX2.
 *
 * Channels are the SIMD axis. With depth multiplier 1 they go 16 per step
 * and taps are consumed in pairs: interleaving the (x + input_offset) int16 values of two taps, and their
 * two weights, lets one vpmaddwd produce x0*w0 + x1*w1 per channel in int32.
 * Each product is at most 255 * 128 in magnitude, so nothing saturates. The
 * in-lane unpacks leave the accumulators as [c0-3 | c8-11] and [c4-7 |
 * c12-15]; one cross-lane permute each restores channel order.
 *
 * Requantization matches LiteRT's x86 depthwise path: 8-channel groups below
 * out_c - out_c % 8 round ties up, the rest ties away from zero. Channels past
 * the last full 16-block and layers of fewer than 16 channels go 8 at a
 * time, taps still in pairs (block8_dm1); depth multipliers above 1 go 8 at
 * a time in int32 lanes (block8).
 */
#include <stdlib.h>

#include "internal.h"

#if defined(__x86_64__)
#include "avx2_requant.h"

#define DW_MAX_TAPS 64
#define DW_STACK_GROUPS 64 /* 512 channels, about 19 KiB of constants */

AVX2_INLINE __m256i load_x16(const int8_t* p, __m256i offset) {
  return _mm256_add_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p)), offset);
}

AVX2_INLINE __m256i load_w16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p));
}

/* 16 channels of one output pixel over `taps` taps. */
AVX2_INLINE void block16(const int8_t* x, const int8_t* w, const size_t* x_off, const size_t* w_off,
                         size_t taps, size_t c, __m256i io, const int32_t* bias, const rq8* p,
                         const edged_requant* r0, const edged_requant* r1, int8_t* yp) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc_a = zero, acc_b = zero;
  size_t t = 0;
  for (; t + 2 <= taps; t += 2) {
    const __m256i xa = load_x16(x + x_off[t] + c, io), xb = load_x16(x + x_off[t + 1] + c, io);
    const __m256i wa = load_w16(w + w_off[t] + c), wb = load_w16(w + w_off[t + 1] + c);
    acc_a = _mm256_add_epi32(acc_a, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb),
                                                      _mm256_unpacklo_epi16(wa, wb)));
    acc_b = _mm256_add_epi32(acc_b, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb),
                                                      _mm256_unpackhi_epi16(wa, wb)));
  }
  if (t < taps) { /* odd tap count: pair the last tap with zeros */
    const __m256i xa = load_x16(x + x_off[t] + c, io), wa = load_w16(w + w_off[t] + c);
    acc_a = _mm256_add_epi32(acc_a, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, zero),
                                                      _mm256_unpacklo_epi16(wa, zero)));
    acc_b = _mm256_add_epi32(acc_b, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, zero),
                                                      _mm256_unpackhi_epi16(wa, zero)));
  }
  __m256i lo = _mm256_permute2x128_si256(acc_a, acc_b, 0x20); /* channels c..c+7 */
  __m256i hi = _mm256_permute2x128_si256(acc_a, acc_b, 0x31); /* c+8..c+15 */
  if (bias) {
    lo = _mm256_add_epi32(lo, _mm256_loadu_si256((const __m256i*)(bias + c)));
    hi = _mm256_add_epi32(hi, _mm256_loadu_si256((const __m256i*)(bias + c + 8)));
  }
  store8(&p[0], rq8_apply(&p[0], lo, r0), yp + c);
  store8(&p[1], rq8_apply(&p[1], hi, r1), yp + c + 8);
}

/* 8 int8 values at p; only the first n (1..8) are read when the 8 bytes
 * would pass `end`, the others are then 0. */
AVX2_INLINE __m128i load_8(const int8_t* p, size_t n, const int8_t* end) {
  if (p + 8 <= end) return _mm_loadl_epi64((const __m128i*)p);
  int8_t tmp[8] = {0};
  for (size_t i = 0; i < n; ++i) tmp[i] = p[i];
  return _mm_loadl_epi64((const __m128i*)tmp);
}

/* Output channels c..c+n-1 (n <= 8) of one output pixel for depth
 * multipliers above 1, one tap at a time in int32 lanes. Those channels read
 * input channels c/dm .. (c+n-1)/dm (`nx` bytes); `spread` repeats each one
 * dm times. */
AVX2_INLINE void block8(const int8_t* x, const int8_t* x_end, const int8_t* w, const int8_t* w_end,
                        const size_t* x_off, const size_t* w_off, size_t taps, size_t c, size_t n,
                        size_t xc, size_t nx, const __m128i* spread, __m256i io32, const int32_t* bias,
                        const rq8* p, const edged_requant* r, int8_t* yp) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t t = 0; t < taps; ++t) {
    __m128i xb = load_8(x + x_off[t] + xc, nx, x_end);
    xb = _mm_shuffle_epi8(xb, *spread);
    const __m256i xv = _mm256_add_epi32(_mm256_cvtepi8_epi32(xb), io32);
    const __m256i wv = _mm256_cvtepi8_epi32(load_8(w + w_off[t] + c, n, w_end));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, wv));
  }
  if (bias) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
    acc = _mm256_add_epi32(acc, _mm256_maskload_epi32(bias + c, mask));
  }
  store8(p, rq8_apply(p, acc, r), yp + c);
}

/* block8 for depth multiplier 1, taps in pairs like block16: the two taps'
 * (x + input_offset) and weights, widened to int16 and interleaved per
 * channel, give channels c..c+3 in the low half and c+4..c+7 in the high
 * half, so one vpmaddwd per tap pair leaves the sums in channel order. `wt`
 * holds these channels' weights zero-padded to 8 per tap, 16 bytes apart
 * (tap_w_stride), so every weight load is a plain 8-byte one. */
AVX2_INLINE __m256i pair8(__m128i a, __m128i b) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(a, b)),
                                 _mm_unpackhi_epi16(a, b), 1);
}

#define DW_TAIL_STRIDE 16

AVX2_INLINE __m128i load_wt(const int8_t* wt, size_t tap) {
  return _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i*)(wt + tap * DW_TAIL_STRIDE)));
}

AVX2_INLINE void block8_dm1(const int8_t* x, const int8_t* x_end, const int8_t* wt, const size_t* x_off,
                            const size_t* tap, size_t taps, size_t c, size_t n, __m128i io16,
                            const int32_t* bias, const rq8* p, const edged_requant* r, int8_t* yp) {
  __m256i acc = _mm256_setzero_si256();
  size_t t = 0;
  for (; t + 2 <= taps; t += 2) {
    const __m128i xa = _mm_add_epi16(_mm_cvtepi8_epi16(load_8(x + x_off[t] + c, n, x_end)), io16);
    const __m128i xb = _mm_add_epi16(_mm_cvtepi8_epi16(load_8(x + x_off[t + 1] + c, n, x_end)), io16);
    const __m256i wv = pair8(load_wt(wt, tap[t]), load_wt(wt, tap[t + 1]));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pair8(xa, xb), wv));
  }
  if (t < taps) { /* odd tap count: pair the last tap with zeros */
    const __m128i zero = _mm_setzero_si128();
    const __m128i xa = _mm_add_epi16(_mm_cvtepi8_epi16(load_8(x + x_off[t] + c, n, x_end)), io16);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pair8(xa, zero), pair8(load_wt(wt, tap[t]), zero)));
  }
  if (bias) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
    acc = _mm256_add_epi32(acc, _mm256_maskload_epi32(bias + c, mask));
  }
  store8(p, rq8_apply(p, acc, r), yp + c);
}

AVX2_TARGET int edged_s8_dwconv_avx2(const edged_op* op, int32_t batch) {
  if (op->out_c < 1 || (int64_t)op->filter_h * op->filter_w > DW_MAX_TAPS) return -1;
  const size_t c_all = (size_t)op->out_c, in_w = (size_t)op->in_w;
  const size_t dm = (size_t)op->depth_multiplier, in_c = (size_t)op->in_c; /* in_c * dm == out_c */
  const size_t blocks = dm == 1 ? c_all / 16 : 0, body = c_all - c_all % 8, groups = (c_all + 7) / 8;
  const size_t plane = (size_t)op->in_h * in_w * in_c;
  const __m256i io32 = _mm256_set1_epi32(op->input_offset);
  const int8_t* w = (const int8_t*)op->weights;
  const __m256i io = _mm256_set1_epi16((short)op->input_offset);
  const edged_requant rq_up = edged_requant_of(op, 0, 0), rq_away = edged_requant_of(op, 1, 0);
  /* Requantization constants of every 8-channel group, computed once per
   * call. Layers up to DW_STACK_GROUPS groups keep them on the stack: on the
   * small late layers of a mobile network a heap round trip per call costs
   * as much as the convolution. rq8 holds __m256i members, so the stack
   * array is aligned by its type and the heap one by hand. */
  rq8 stack_params[DW_STACK_GROUPS];
  __m128i stack_spread[DW_STACK_GROUPS];
  void* raw = NULL;
  rq8* params = stack_params;
  __m128i* spread = stack_spread;
  if (groups > DW_STACK_GROUPS) {
    raw = malloc(groups * (sizeof(rq8) + sizeof(__m128i)) + 32);
    if (raw == NULL) return -1;
    params = (rq8*)(((uintptr_t)raw + 31) & ~(uintptr_t)31);
    spread = (__m128i*)(params + groups);
  }
  /* Only depth multipliers above 1 read the spread shuffles (and pay their
   * divisions). */
  for (size_t g = 0; dm > 1 && g < groups; ++g) {
    int8_t index[16] = {0};
    for (size_t j = 0; j < 8; ++j) index[j] = (int8_t)((8 * g + j) / dm - (8 * g) / dm);
    spread[g] = _mm_loadu_si128((const __m128i*)index);
  }
  for (size_t g = 0; g < groups; ++g)
    rq8_load(&params[g], 8 * g < body ? &rq_up : &rq_away, 8 * g, c_all);

  /* Tap offsets of a pixel whose window lies inside the input, relative to
   * the window origin: every interior pixel shares them. */
  size_t x_rel[DW_MAX_TAPS], w_all[DW_MAX_TAPS], t_all[DW_MAX_TAPS];
  size_t x_off[DW_MAX_TAPS], w_off[DW_MAX_TAPS], t_off[DW_MAX_TAPS];
  const size_t all_taps = (size_t)op->filter_h * (size_t)op->filter_w;
  for (int32_t ky = 0, t = 0; ky < op->filter_h; ++ky)
    for (int32_t kx = 0; kx < op->filter_w; ++kx, ++t) {
      x_rel[t] = ((size_t)ky * (size_t)op->dilation_h * in_w + (size_t)kx * (size_t)op->dilation_w) * in_c;
      w_all[t] = (size_t)t * c_all;
      t_all[t] = (size_t)t;
    }
  /* Weights of the channels past the last 16-block (fewer than 16 at depth
   * multiplier 1), zero-padded per tap for block8_dm1. */
  const size_t tail_c = 16 * blocks;
  int8_t w_tail[DW_MAX_TAPS * DW_TAIL_STRIDE];
  if (dm == 1 && tail_c < c_all)
    for (size_t t = 0; t < all_taps; ++t) {
      memset(w_tail + t * DW_TAIL_STRIDE, 0, DW_TAIL_STRIDE);
      memcpy(w_tail + t * DW_TAIL_STRIDE, w + t * c_all + tail_c, c_all - tail_c);
    }
  /* Eight channels at stride 1: two neighbouring interior output pixels go
   * through block16 together, as 16 "channels". Their taps lie 8 bytes apart
   * in the input and their outputs 8 bytes apart, so only the weights, bias
   * and requantization constants need repeating. */
  const int pairs = dm == 1 && c_all == 8 && op->stride_w == 1;
  int8_t w_pair[DW_MAX_TAPS * 16];
  int32_t bias_pair[16];
  size_t w_pair_off[DW_MAX_TAPS];
  rq8 pair_params[2] = {params[0], params[0]};
  if (pairs) {
    for (size_t t = 0; t < all_taps; ++t) {
      memcpy(w_pair + 16 * t, w + 8 * t, 8);
      memcpy(w_pair + 16 * t + 8, w + 8 * t, 8);
      w_pair_off[t] = 16 * t;
    }
    if (op->bias) {
      memcpy(bias_pair, op->bias, 8 * sizeof(int32_t));
      memcpy(bias_pair + 8, op->bias, 8 * sizeof(int32_t));
    }
  }
  const int32_t eff_h = (op->filter_h - 1) * op->dilation_h + 1;
  const int32_t eff_w = (op->filter_w - 1) * op->dilation_w + 1;

  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (int32_t oy = 0; oy < op->out_h; ++oy) {
      const int32_t iy0 = oy * op->stride_h - op->pad_top;
      for (int32_t ox = 0; ox < op->out_w; ++ox) {
        const int32_t ix0 = ox * op->stride_w - op->pad_left;
        int8_t* yp = y + ((size_t)oy * (size_t)op->out_w + (size_t)ox) * c_all;
        const int8_t* xs = x;
        const size_t* xo = x_off;
        const size_t* wo = w_off;
        const size_t* to = t_off;
        size_t taps = 0;
        if (pairs && ox + 1 < op->out_w && iy0 >= 0 && ix0 >= 0 && iy0 + eff_h <= op->in_h &&
            ix0 + 1 + eff_w <= op->in_w) {
          block16(x + ((size_t)iy0 * in_w + (size_t)ix0) * in_c, w_pair, x_rel, w_pair_off, all_taps, 0, io,
                  op->bias ? bias_pair : NULL, pair_params, &rq_up, &rq_up, yp);
          ++ox;
          continue;
        }
        if (iy0 >= 0 && ix0 >= 0 && iy0 + eff_h <= op->in_h && ix0 + eff_w <= op->in_w) {
          xs = x + ((size_t)iy0 * in_w + (size_t)ix0) * in_c;
          xo = x_rel;
          wo = w_all;
          to = t_all;
          taps = all_taps;
        } else { /* border: only the taps inside the input contribute */
          taps = edged_dw_taps_inside(op, iy0, ix0, x_off, t_off);
          for (size_t t = 0; t < taps; ++t) w_off[t] = t_off[t] * c_all;
        }
        for (size_t blk = 0; blk < blocks; ++blk) {
          const size_t c = 16 * blk;
          block16(xs, w, xo, wo, taps, c, io, op->bias, &params[2 * blk],
                  c < body ? &rq_up : &rq_away, c + 8 < body ? &rq_up : &rq_away, yp);
        }
        for (size_t c = 16 * blocks; c < c_all; c += 8) {
          const size_t n = c_all - c < 8 ? c_all - c : 8;
          if (dm == 1) {
            block8_dm1(xs, x + plane, w_tail + (c - tail_c), xo, to, taps, c, n, _mm256_castsi256_si128(io),
                       op->bias, &params[c / 8], c < body ? &rq_up : &rq_away, yp);
            continue;
          }
          const int8_t* w_end = w + all_taps * c_all;
          const size_t xc = c / dm, nx = (c + n - 1) / dm - xc + 1;
          block8(xs, x + plane, w, w_end, xo, wo, taps, c, n, xc, nx, &spread[c / 8], io32, op->bias,
                 &params[c / 8], c < body ? &rq_up : &rq_away, yp);
        }
      }
    }
  }
  free(raw);
  return 0;
}

#else
typedef int edged_s8_dwconv_avx2_unused;
#endif
