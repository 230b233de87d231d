/* Weight packing for the s8_gemm family. Plain C on purpose: a plan can be
 * packed for any variant on any CPU; only running it needs the ISA. */
#include "internal.h"

typedef struct {
  int32_t nr, kr;
} edged_tile;

static int edged_variant_tile(int32_t variant, edged_tile* t) {
  switch (variant) {
    case EDGED_VARIANT_REF: t->nr = 1; t->kr = 1; return 0;
    case EDGED_VARIANT_AVX2: t->nr = 16; t->kr = 2; return 0;
    case EDGED_VARIANT_AVX512VNNI: t->nr = 16; t->kr = 4; return 0;
    case EDGED_VARIANT_NEON: t->nr = 8; t->kr = 16; return 0;
    case EDGED_VARIANT_NEONDOT: t->nr = 16; t->kr = 4; return 0;
    default: return -1;
  }
}

static uint64_t round_up(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

/* Fills a header for (variant, out_c, depth); returns -1 when the shape is
 * unusable. Sizes are computed in 64 bits so absurd shapes fail, not wrap. */
static int edged_layout(int32_t variant, int32_t out_c, int32_t depth, edged_packed_header* h) {
  edged_tile t;
  if (edged_variant_tile(variant, &t) != 0 || out_c <= 0 || depth <= 0) return -1;
  memset(h, 0, sizeof(*h));
  h->magic = EDGED_PACKED_MAGIC;
  h->variant = variant;
  h->out_c = out_c;
  h->depth = depth;
  h->nr = t.nr;
  h->kr = t.kr;
  uint64_t n_pad = round_up((uint64_t)out_c, (uint64_t)t.nr);
  uint64_t k_pad = round_up((uint64_t)depth, (uint64_t)t.kr);
  if (n_pad > INT32_MAX || k_pad > INT32_MAX) return -1;
  h->n_pad = (int32_t)n_pad;
  h->k_pad = (int32_t)k_pad;
  h->term_offset = round_up(sizeof(edged_packed_header), 64);
  h->weight_offset = h->term_offset + round_up(n_pad * 4u, 64);
  h->total_size = h->weight_offset + n_pad * k_pad;
  if (h->total_size > (uint64_t)SIZE_MAX) return -1;
  return 0;
}

size_t edged_s8_gemm_packed_size(int32_t variant, int32_t out_c, int32_t depth) {
  edged_packed_header h;
  if (edged_layout(variant, out_c, depth, &h) != 0) return 0;
  return (size_t)h.total_size;
}

/* Offset in the packed weights of w[o][d] for a blocked layout. */
static size_t blocked_index(const edged_packed_header* h, size_t o, size_t d) {
  const size_t nr = (size_t)h->nr, kr = (size_t)h->kr;
  const size_t block = o / nr, j = o % nr;
  const size_t slice = d / kr, t = d % kr;
  return block * nr * (size_t)h->k_pad + slice * nr * kr + j * kr + t;
}

int32_t edged_s8_gemm_pack(int32_t variant, const int8_t* w, const int32_t* bias,
                           int32_t input_offset, int32_t out_c, int32_t depth, void* packed) {
  edged_packed_header h;
  if (w == NULL || packed == NULL || edged_layout(variant, out_c, depth, &h) != 0) return -1;
  memset(packed, 0, (size_t)h.total_size);
  memcpy(packed, &h, sizeof(h));
  int32_t* term = (int32_t*)((char*)packed + h.term_offset);
  int8_t* pw = (int8_t*)((char*)packed + h.weight_offset);

  for (size_t o = 0; o < (size_t)out_c; ++o) {
    const int8_t* row = w + o * (size_t)depth;
    int32_t rowsum = 0;
    for (size_t d = 0; d < (size_t)depth; ++d) rowsum += row[d]; /* |sum| < 2^31 for depth < 2^24 */
    /* All folding wraps mod 2^32, exactly like TFLite's int32 accumulator
     * would if it ever overflowed, so the fold never changes a result. */
    uint32_t t = bias ? (uint32_t)bias[o] : 0u;
    t += (uint32_t)input_offset * (uint32_t)rowsum;
    /* vpdpbusd multiplies unsigned bytes: the kernel feeds x + 128, which
     * adds 128 * rowsum that we take back here. */
    if (variant == EDGED_VARIANT_AVX512VNNI) t -= 128u * (uint32_t)rowsum;
    term[o] = (int32_t)t;

    if (variant == EDGED_VARIANT_REF) {
      memcpy(pw + o * (size_t)depth, row, (size_t)depth);
    } else {
      for (size_t d = 0; d < (size_t)depth; ++d) pw[blocked_index(&h, o, d)] = row[d];
    }
  }
  return 0;
}

int edged_s8_gemm_check(const void* packed, int32_t variant, int32_t out_c, int32_t depth) {
  edged_packed_header want;
  if (packed == NULL || edged_layout(variant, out_c, depth, &want) != 0) return -1;
  const edged_packed_header* h = (const edged_packed_header*)packed;
  if (h->magic != want.magic || h->variant != want.variant || h->out_c != want.out_c ||
      h->depth != want.depth || h->n_pad != want.n_pad || h->k_pad != want.k_pad ||
      h->term_offset != want.term_offset || h->weight_offset != want.weight_offset)
    return -1;
  return 0;
}

edged_s8_gemm_fn edged_s8_gemm_get(int32_t variant) {
  switch (variant) {
    case EDGED_VARIANT_REF: return edged_s8_gemm_ref;
#if defined(__x86_64__)
    case EDGED_VARIANT_AVX2: return edged_s8_gemm_avx2;
    case EDGED_VARIANT_AVX512VNNI: return edged_s8_gemm_avx512vnni;
#endif
#if defined(__aarch64__)
    case EDGED_VARIANT_NEON: return edged_s8_gemm_neon;
    case EDGED_VARIANT_NEONDOT: return edged_s8_gemm_neondot;
#endif
    default: return NULL;
  }
}
