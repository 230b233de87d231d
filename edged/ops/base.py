"""What every operator module shares: the prepare context and geometry helpers.

An operator module (one per op family, like TFLite Micro's kernels) defines
``OPCODES``, ``prepare(ctx) -> params`` which does all float work once,
``reference(params, inputs) -> output``, the numpy spec of the op, and
``describe(params, desc) -> keepalive`` which fills the C descriptor.

Every module also defines ``infer_output(ctx) -> OutputType``: the shape and
dtype its output must have, computed from its inputs and options alone, with
every option checked to be in range (raise ``ctx.malformed(...)`` for a value
no valid file holds, ``ctx.fail(...)`` for one the native engine does not
run). ``check_op`` runs it at load, before ``prepare``, and refuses a file
whose declared output differs: the arena is laid out from the declared
shapes, so a mismatch would let a kernel write past its tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.errors import ModelFormatError, UnsupportedModelError
from edged.model.ir import Graph, Operator, Tensor
from edged.model.quant import activation_range

# Tensor dimensions and op geometry go into int32 C fields.
MAX_DIM = 2**31 - 1
# Filters, strides and dilations beyond this are no real model's; keeping them
# small keeps every window coordinate the kernels compute inside int32.
MAX_WINDOW = 1 << 16


@dataclass
class OpContext:
    """One operator of a graph, with the model's name for error messages."""

    graph: Graph
    op: Operator
    index: int
    model: str
    # Requantization rounding of FC/CONV/DEPTHWISE: "double" or "single" (edged.model.rounding).
    rounding: str = "double"

    def input(self, k: int) -> Tensor | None:
        if k >= len(self.op.inputs) or self.op.inputs[k] < 0:
            return None
        return self.graph.tensors[self.op.inputs[k]]

    def output(self, k: int = 0) -> Tensor:
        return self.graph.tensors[self.op.outputs[k]]

    def malformed(self, reason: str) -> ModelFormatError:
        """The error for an operator no valid .tflite file holds (inconsistent shapes, bad options)."""
        return ModelFormatError(f"{self.model}: operator #{self.index} ({self.op.opcode}): {reason}")

    def option(self, key: str, default: int, low: int, high: int = MAX_DIM) -> int:
        """An integer option, checked to lie in [low, high]."""
        value = self.op.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise self.malformed(f"option {key} = {value!r} is not an integer in [{low}, {high}]")
        return int(value)

    def activations(self) -> list[Tensor]:
        """The non-constant inputs, in op order."""
        inputs = (self.input(k) for k in range(len(self.op.inputs)))
        return [t for t in inputs if t is not None and not t.is_constant]

    def fail(self, reason: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{self.model}: operator #{self.index} ({self.op.opcode}): {reason}; "
            "run this model with --engine litert"
        )

    def require_int8(self, *tensors: Tensor | None) -> None:
        for t in tensors:
            if t is None:
                continue
            if t.dtype != np.int8:
                raise self.fail(f"tensor '{t.name}' is {t.dtype}, the native engine runs int8 tensors")
            if t.quant is None:
                raise self.fail(f"tensor '{t.name}' has no quantization parameters")

    def scale_zp(self, t: Tensor) -> tuple[float, int]:
        """The per-tensor (float32 scale, zero point) of an activation tensor."""
        if t.quant is None or t.quant.per_channel:
            raise self.fail(f"tensor '{t.name}' must be quantized per tensor")
        return t.quant.single_scale, t.quant.single_zero_point

    def bias(self, n_out: int) -> np.ndarray:
        """The int32 bias vector (input 2) of a FULLY_CONNECTED or convolution, zeros if absent."""
        return self.bias_at(2, n_out)

    def bias_at(self, k: int, n_out: int) -> np.ndarray:
        """The int32 bias vector at input ``k``, zeros if absent."""
        b = self.input(k)
        if b is None:
            return np.zeros(n_out, dtype=np.int32)
        if not b.is_constant or b.dtype != np.int32 or b.size != n_out:
            raise self.fail(f"bias must be a constant int32 vector of {n_out} entries (one per channel)")
        return b.data.astype(np.int32).reshape(-1)

    def activation(self, out: Tensor, act: str | None = None) -> tuple[int, int]:
        """The clamp range of the fused activation (the op's own, unless ``act`` names one)."""
        scale, zp = self.scale_zp(out)
        act = self.op.fused_activation if act is None else act
        try:
            return activation_range(act, scale, zp, out.dtype)
        except ValueError as exc:
            raise self.fail(str(exc)) from exc


@dataclass(frozen=True)
class OutputType:
    """What an operator's output must be, inferred from its inputs and options."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def of(cls, shape, dtype) -> OutputType:
        return cls(tuple(int(d) for d in shape), np.dtype(dtype))


def check_op(ctx: OpContext, module) -> None:
    """Refuse an operator whose declared output is not what its inputs and options give.

    Also requires the batch axis to pass through unchanged: the executor lays
    out and strides every tensor per sample of the same batch.
    """
    infer = getattr(module, "infer_output", None)
    if infer is None:
        raise ctx.fail("the operator has no shape check (infer_output) in the native engine")
    y = ctx.output()
    expected = infer(ctx)
    if expected.dtype != y.dtype:
        raise ctx.malformed(f"output '{y.name}' is declared {y.dtype}, its inputs give {expected.dtype}")
    if expected.shape != y.shape:
        raise ctx.malformed(
            f"output '{y.name}' is declared {list(y.shape)}, its inputs give {list(expected.shape)}"
        )
    for t in ctx.activations():
        if not t.shape or t.shape[0] != y.shape[0]:
            raise ctx.fail(
                f"input '{t.name}' {list(t.shape)} and output {list(y.shape)} differ in the batch axis"
            )


def same_as_input(ctx: OpContext, dtype=None) -> OutputType:
    """``infer_output`` of an elementwise op: the shape of input 0, its dtype unless given."""
    x = ctx.input(0)
    if x is None:
        raise ctx.malformed("input 0 is missing")
    return OutputType.of(x.shape, x.dtype if dtype is None else dtype)


def window_output(
    ctx: OpContext, in_size: int, filter_size: int, stride: int, dilation: int, axis: str
) -> tuple[int, int]:
    """(output size, leading pad) of one spatial axis, with its window values checked."""
    padding = ctx.op.options.get("padding", "SAME")
    if padding not in ("SAME", "VALID"):
        raise ctx.malformed(f"padding {padding!r} is neither SAME nor VALID")
    for what, value in (("filter", filter_size), ("stride", stride), ("dilation", dilation)):
        if not 1 <= value <= MAX_WINDOW:
            raise ctx.malformed(f"{what} {axis} = {value} is not in [1, {MAX_WINDOW}]")
    out, pad = same_padding(in_size, filter_size, stride, dilation, padding)
    if out < 1:
        raise ctx.malformed(f"the {axis} window ({filter_size}, dilation {dilation}) is larger than "
                            f"the input ({in_size}) with VALID padding")
    return out, pad


def describe_requantization(p, d, shared: dict) -> None:
    """The per-channel requantization fields shared by FULLY_CONNECTED and convolutions.

    ``p`` has input_offset, output_offset, act_min and act_max; ``shared``
    holds the int32 multiplier and shift arrays the descriptor points at.
    """
    from edged.runtime.kernels import ffi

    d.out_multiplier = ffi.cast("int32_t *", shared["multiplier"].ctypes.data)
    d.out_shift = ffi.cast("int32_t *", shared["shift"].ctypes.data)
    d.input_offset = p.input_offset
    d.output_offset = p.output_offset
    d.act_min, d.act_max = p.act_min, p.act_max


def same_padding(in_size: int, filter_size: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """TFLite's ComputePaddingHeightWidth for one axis: (output size, leading pad)."""
    effective = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size - effective + stride) // stride
    else:
        raise ValueError(f"unknown padding {padding}")
    total = (out - 1) * stride + effective - in_size
    return out, max(total // 2, 0)


def nhwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Per-sample (h, w, c) of a 4-D NHWC shape."""
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D NHWC tensor, got shape {list(shape)}")
    return shape[1], shape[2], shape[3]


def clamp_to(x: np.ndarray, lo: int, hi: int, dtype=np.int8) -> np.ndarray:
    return np.clip(x, lo, hi).astype(dtype)
