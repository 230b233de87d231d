"""HARD_SWISH int8 -> int8: x * relu6(x + 3) / 6 in LiteRT's 16-bit fixed point.

LiteRT's optimized kernel has a NEON body only on real Arm NEON (its x86
NEON emulation mishandles zero-count saturating shifts), so on x86 every
element takes the scalar code, which is the reference arithmetic reproduced
here: the input is moved to a "high-resolution" scale (x 2^7), a "reluish"
factor in [0, 1] is computed on a scale where 3.0 is 2^15, and the two are
multiplied with a truncating (not rounding) doubling high multiply.

LiteRT's aarch64 build runs the NEON body over the flat tensor (batch
included) in blocks of 8 and the scalar code above on the last ``n % 8``
elements. The body's steps are the same but round as the instructions do:
``vqrdmulh`` and ``vrshl`` round ties up (not away from zero) and ``vqdmulh``
floors (not truncates) the final product, so a negative input can land one
step lower. ``neon`` selects that form (edged.model.rounding.neon_bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import quantize_multiplier, vector_body
from edged.model.rounding import neon_bodies
from edged.ops.base import OpContext, same_as_input

OPCODES = ("HARD_SWISH",)
NEON_BLOCK = 8
infer_output = same_as_input
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
INT32_MAX_MINUS_OFFSET = 2**31 - 1 - (1 << 15)


@dataclass
class HardSwishParams:
    input_zero_point: int
    output_zero_point: int
    output_multiplier: int  # int16 fixed point
    output_exponent: int  # <= 0
    reluish_multiplier: int  # int16 fixed point
    reluish_exponent: int
    neon: bool = False  # LiteRT's aarch64 build: NEON body, scalar tail


def downscale_multiplier(multiplier: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15."""
    if multiplier >= INT32_MAX_MINUS_OFFSET:
        return INT16_MAX
    return (multiplier + (1 << 15)) >> 16


def prepare(ctx: OpContext) -> HardSwishParams:
    x, y = ctx.input(0), ctx.output()
    if x is None or len(ctx.op.inputs) != 1:
        raise ctx.fail("HARD_SWISH takes exactly one input")
    ctx.require_int8(x, y)
    if x.is_constant:
        raise ctx.fail("HARD_SWISH of a constant is not supported")
    if x.shape != y.shape:
        raise ctx.fail(f"output shape {list(y.shape)} differs from input shape {list(x.shape)}")
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    # HardSwishPrepare computes these in float32.
    hires_input_scale = np.float32(1.0 / 128.0) * np.float32(in_scale)
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    out_mult, out_exp = quantize_multiplier(float(hires_input_scale / np.float32(out_scale)))
    if out_exp > 0:
        raise ctx.fail("the output scale is below input scale / 128, which LiteRT refuses")
    relu_mult, relu_exp = quantize_multiplier(float(hires_input_scale / reluish_scale))
    return HardSwishParams(
        input_zero_point=in_zp,
        output_zero_point=out_zp,
        output_multiplier=downscale_multiplier(out_mult),
        output_exponent=out_exp,
        reluish_multiplier=downscale_multiplier(relu_mult),
        reluish_exponent=relu_exp,
        neon=neon_bodies(ctx.rounding),
    )


def _wrap16(x: np.ndarray) -> np.ndarray:
    return ((x + 2**15) % 2**16) - 2**15


def _saturate16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT16_MIN, INT16_MAX)


def _srdhm16(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp's int16 SaturatingRoundingDoublingHighMul (ties away from zero)."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    high = _truncating_divide(ab + nudge, 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, _wrap16(high))


def _sdhm16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TFLite's SaturatingDoublingHighMul: the same product, truncated toward zero."""
    high = _truncating_divide(a * b, 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, _wrap16(high))


def _truncating_divide(x: np.ndarray, d: int) -> np.ndarray:
    return np.sign(x) * (np.abs(x) // d)


def _rounding_divide_by_pot16(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT on int16, whose mask is an int16 (all ones past 15 bits)."""
    mask = int(_wrap16(np.int64((1 << exponent) - 1)))
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return _wrap16((x >> exponent) + (remainder > threshold))


def _saturating_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    return _saturate16(x * (1 << amount))


def _vqrdmulh16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NEON vqrdmulh on int16: the high half of 2ab, ties up."""
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, (a * b + (1 << 14)) >> 15)


def _vqdmulh16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NEON vqdmulh on int16: the high half of 2ab, floored."""
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, (a * b) >> 15)


def _vrshr16(x: np.ndarray, exponent: int) -> np.ndarray:
    """NEON vrshl by -exponent: a right shift rounding ties up, in full precision."""
    if exponent <= 0:
        return x
    return (x + (1 << (exponent - 1))) >> exponent


def _neon(p: HardSwishParams, x: np.ndarray) -> np.ndarray:
    hires = x * (1 << 7)
    preshift_output = _vqrdmulh16(hires, p.output_multiplier)
    reluish = _saturating_left_shift16(hires, max(0, p.reluish_exponent - 1))
    reluish = _vqrdmulh16(reluish, p.reluish_multiplier)
    reluish = _saturating_left_shift16(reluish, 1 if p.reluish_exponent > 0 else 0)
    reluish = _vrshr16(reluish, -p.reluish_exponent)
    reluish = (reluish + (1 << 15)) >> 1  # vrhadd with 32767
    out = _vrshr16(_vqdmulh16(reluish, preshift_output), -p.output_exponent)
    return _wrap16(out + p.output_zero_point)


def reference(p: HardSwishParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.int64).reshape(-1) - p.input_zero_point
    if not p.neon:
        out = _scalar(p, x)
    else:
        body = vector_body(x.size, NEON_BLOCK)
        out = np.concatenate([_neon(p, x[:body]), _scalar(p, x[body:])])
    return np.clip(out, -128, 127).astype(np.int8).reshape(inputs[0].shape)


def _scalar(p: HardSwishParams, x: np.ndarray) -> np.ndarray:
    hires = x * (1 << 7)
    preshift_output = _srdhm16(hires, p.output_multiplier)
    reluish = hires
    if p.reluish_exponent > 0:
        reluish = _saturating_left_shift16(reluish, p.reluish_exponent - 1)
    reluish = _srdhm16(reluish, p.reluish_multiplier)
    if p.reluish_exponent > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    if p.reluish_exponent < 0:
        reluish = _rounding_divide_by_pot16(reluish, -p.reluish_exponent)
    reluish = (reluish + (1 << 15)) >> 1
    out = _rounding_divide_by_pot16(_sdhm16(reluish, preshift_output), -p.output_exponent)
    return _wrap16(out + p.output_zero_point)


def native_kind(p: HardSwishParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_HARD_SWISH


def describe(p: HardSwishParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address, ffi, lib

    d.count = d.in_stride[0]
    d.input_offset = -p.input_zero_point
    d.output_offset = p.output_zero_point
    d.multiplier, d.shift = p.output_multiplier, p.output_exponent
    d.in_multiplier[0], d.in_shift[0] = p.reluish_multiplier, p.reluish_exponent
    d.mode = lib.EDGED_BODY_NEON if p.neon else lib.EDGED_BODY_X86
    # Every int8 input through the kernel's own arithmetic once (NEON: the body's and
    # the tail's); runs look it up.
    table = np.empty(512 if p.neon else 256, dtype=np.int8)
    lib.edged_hard_swish_table(ffi.addressof(d), ffi.cast("int8_t *", address(table)))
    d.table = address(table)
    return [table]
