/* HARD_SWISH int8 -> int8 in LiteRT's 16-bit fixed point (see
 * edged/ops/hard_swish.py). LiteRT runs its scalar code for every element on
 * x86; its aarch64 build runs a NEON body on blocks of 8 of the flat tensor
 * and the scalar code on the rest (mode EDGED_BODY_NEON). Multipliers are
 * Q15, exponents as TFLite's QuantizeMultiplier gives them: multiplier/shift
 * are the output's (shift <= 0), in_multiplier[0]/in_shift[0] the "reluish"
 * factor's. */
#include "internal.h"

static int16_t saturate16(int64_t v) {
  return (int16_t)(v < INT16_MIN ? INT16_MIN : (v > INT16_MAX ? INT16_MAX : v));
}

static int16_t wrap16(int32_t v) { return (int16_t)(uint16_t)(uint32_t)v; }

/* Division truncating toward zero, written out: C99 guarantees it for `/`,
 * but spelling it keeps the intent visible next to the rounding variants. */
static int32_t div_pow15(int32_t v) { return v / (1 << 15); }

/* gemmlowp SaturatingRoundingDoublingHighMul on int16 (ties away from zero). */
static int16_t srdhm16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  const int32_t ab = (int32_t)a * (int32_t)b;
  const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
  return wrap16(div_pow15(ab + nudge));
}

/* TFLite's SaturatingDoublingHighMul: the same product truncated toward zero. */
static int16_t sdhm16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  return wrap16(div_pow15((int32_t)a * (int32_t)b));
}

/* gemmlowp RoundingDivideByPOT on int16: its mask is an int16, so for
 * exponents of 16 and more it is all ones. */
static int16_t rdbypot16(int16_t x, int exponent) {
  const int16_t mask = wrap16((int32_t)((INT64_C(1) << exponent) - 1));
  const int16_t remainder = (int16_t)(x & mask);
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return wrap16((x >> exponent) + (remainder > threshold ? 1 : 0));
}

static int16_t saturating_left_shift16(int16_t x, int amount) {
  return saturate16((int64_t)x * ((int64_t)1 << amount));
}

static int8_t hard_swish_one(const edged_op* op, int8_t x) {
  const int16_t out_mult = (int16_t)op->multiplier, relu_mult = (int16_t)op->in_multiplier[0];
  const int32_t out_exp = op->shift, relu_exp = op->in_shift[0];
  const int16_t hires = (int16_t)((x + op->input_offset) * (1 << 7));
  const int16_t preshift_output = srdhm16(hires, out_mult);
  int16_t reluish = hires;
  if (relu_exp > 0) reluish = saturating_left_shift16(reluish, relu_exp - 1);
  reluish = srdhm16(reluish, relu_mult);
  if (relu_exp > 0) reluish = saturating_left_shift16(reluish, 1);
  if (relu_exp < 0) reluish = rdbypot16(reluish, -relu_exp);
  reluish = (int16_t)((reluish + (1 << 15)) >> 1);
  const int16_t out = wrap16(rdbypot16(sdhm16(reluish, preshift_output), -out_exp) + op->output_offset);
  return (int8_t)edged_clamp(out, -128, 127);
}

/* The NEON instructions' forms: vqrdmulh rounds ties up, vqdmulh floors
 * (arithmetic shifts of negative values: two's complement targets), and
 * vrshl by a negative amount is a right shift rounding ties up, computed
 * without overflow. */
static int16_t vqrdmulh16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  return (int16_t)(((int32_t)a * (int32_t)b + (1 << 14)) >> 15);
}

static int16_t vqdmulh16(int16_t a, int16_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  return (int16_t)(((int32_t)a * (int32_t)b) >> 15);
}

static int16_t vrshr16(int16_t x, int exponent) {
  if (exponent <= 0) return x;
  return (int16_t)(((int64_t)x + (INT64_C(1) << (exponent - 1))) >> exponent);
}

static int8_t hard_swish_neon_one(const edged_op* op, int8_t x) {
  const int16_t out_mult = (int16_t)op->multiplier, relu_mult = (int16_t)op->in_multiplier[0];
  const int32_t out_exp = op->shift, relu_exp = op->in_shift[0];
  const int16_t hires = (int16_t)((x + op->input_offset) * (1 << 7));
  const int16_t preshift_output = vqrdmulh16(hires, out_mult);
  int16_t reluish = saturating_left_shift16(hires, relu_exp > 1 ? relu_exp - 1 : 0);
  reluish = vqrdmulh16(reluish, relu_mult);
  reluish = saturating_left_shift16(reluish, relu_exp > 0 ? 1 : 0);
  reluish = vrshr16(reluish, -relu_exp);
  reluish = (int16_t)((reluish + (1 << 15)) >> 1); /* vrhadd with 32767 */
  const int16_t out = wrap16(vrshr16(vqdmulh16(reluish, preshift_output), -out_exp) + op->output_offset);
  return (int8_t)edged_clamp(out, -128, 127);
}

void edged_hard_swish_table(const edged_op* op, int8_t* table) {
  const int neon = op->mode == EDGED_BODY_NEON;
  for (int v = -128; v < 128; ++v) {
    table[(uint8_t)v] = neon ? hard_swish_neon_one(op, (int8_t)v) : hard_swish_one(op, (int8_t)v);
    if (neon) table[256 + (uint8_t)v] = hard_swish_one(op, (int8_t)v);
  }
}

/* Without a table from the descriptor, calls of at least this many elements
 * build one on the stack first (256 entries cost about as much as 256
 * elements); smaller ones compute each element. */
#define LUT_MIN_ELEMENTS 288

void edged_hard_swish(const edged_op* op, int32_t batch) {
  const size_t count = (size_t)op->count;
  const int neon = op->mode == EDGED_BODY_NEON;
  /* x86: every element is "tail" (scalar); NEON: the flat index decides. */
  const size_t n = count * (size_t)batch, body = neon ? n - n % 8 : 0;
  int8_t local[512];
  const int8_t* lut = (const int8_t*)op->table;
  if (lut == NULL && n >= LUT_MIN_ELEMENTS) {
    edged_hard_swish_table(op, local);
    lut = local;
  }
  const int8_t* tail_lut = lut != NULL && neon ? lut + 256 : lut;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* x = (const int8_t*)op->in[0] + (size_t)b * (size_t)op->in_stride[0];
    int8_t* y = (int8_t*)op->out + (size_t)b * (size_t)op->out_stride;
    const size_t flat0 = (size_t)b * count;
    const size_t in_body = body > flat0 ? (body - flat0 < count ? body - flat0 : count) : 0;
    if (lut != NULL) {
      for (size_t i = 0; i < in_body; ++i) y[i] = lut[(uint8_t)x[i]];
      for (size_t i = in_body; i < count; ++i) y[i] = tail_lut[(uint8_t)x[i]];
    } else {
      for (size_t i = 0; i < in_body; ++i) y[i] = hard_swish_neon_one(op, x[i]);
      for (size_t i = in_body; i < count; ++i) y[i] = hard_swish_one(op, x[i]);
    }
  }
}
