/* MEAN of int8 over the middle axis of a per-sample [outer, in_h*in_w, in_c]
 * view, in LiteRT's two flavours (see EDGED_MEAN_* in edged_kernels.h). */
#include "internal.h"

#define MEAN_CHUNK 256

void edged_mean(const edged_op* op, int32_t batch) {
  const size_t outer = op->outer > 0 ? (size_t)op->outer : 1u;
  const size_t reduce = (size_t)op->in_h * (size_t)op->in_w, inner = (size_t)op->in_c;
  const int optimized = op->mode == EDGED_MEAN_OPTIMIZED;
  /* LiteRT's optimized kernel does 16 channels per NEON(-on-SSE) iteration,
   * rounding ties up, and the leftover channels with scalar gemmlowp code. */
  const size_t body = inner - inner % 16;
  /* Reference path: QuantizedMeanOrSum subtracts zp * count before scaling. */
  const int32_t centre = (int32_t)((uint32_t)op->input_offset * (uint32_t)reduce);

  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    for (size_t o = 0; o < outer; ++o) {
      const int8_t* xo = x + o * reduce * inner;
      int8_t* yo = y + o * inner;
      for (size_t c0 = 0; c0 < inner; c0 += MEAN_CHUNK) {
        const size_t cn = inner - c0 < MEAN_CHUNK ? inner - c0 : MEAN_CHUNK;
        int32_t acc[MEAN_CHUNK];
        memset(acc, 0, cn * sizeof(int32_t));
        for (size_t r = 0; r < reduce; ++r) {
          const int8_t* xp = xo + r * inner + c0;
          for (size_t j = 0; j < cn; ++j) acc[j] += xp[j];
        }
        size_t done = 0;
#if defined(__x86_64__)
        /* One vector pass: the optimized form's body channels (c < body, ties
         * up), or the whole chunk of the reference form (ties away). */
        const uint32_t cpu = edged_cpu_variants();
        if (cpu & ((1u << EDGED_VARIANT_AVX2) | (1u << EDGED_VARIANT_AVX512VNNI))) {
          size_t (*const requant)(const int32_t*, size_t, int32_t, int32_t, int32_t, int32_t, int, int8_t*) =
              (cpu & (1u << EDGED_VARIANT_AVX512VNNI)) ? edged_s8_requant_uniform_avx512
                                                       : edged_s8_requant_uniform_avx2;
          if (!optimized)
            done = requant(acc, cn, centre, op->multiplier, op->shift, op->output_offset, 1, yo + c0);
          else if (c0 < body)
            done = requant(acc, body - c0 < cn ? body - c0 : cn, 0, op->multiplier, op->shift, op->output_offset, 0,
                           yo + c0);
        }
#endif
        for (size_t j = done; j < cn; ++j) {
          const size_t c = c0 + j;
          int32_t v;
          if (optimized) {
            v = c < body ? edged_mbqm_rhu(acc[j], op->multiplier, op->shift)
                         : edged_mbqm(acc[j], op->multiplier, op->shift);
          } else {
            v = edged_mbqm(edged_wadd(acc[j], centre), op->multiplier, op->shift);
          }
          yo[c] = (int8_t)edged_clamp(edged_wadd(v, op->output_offset), -128, 127);
        }
      }
    }
  }
}
