"""TRANSPOSE, SLICE and STRIDED_SLICE of int8 activations: pure data movement.

Each op is read into numpy indexing of the whole tensor (a permutation, or one
slice / index per axis with TFLite's clamping, which is Python's): that is the
spec. The native engine runs it as one affine gather (STRIDED_VIEW): at load,
the spec is applied to a tensor of element numbers, and the start and per-axis
strides are read off the result and checked to reproduce it. The batch axis
must pass through whole: a slice of it, or a permutation moving it, is refused.
LiteRT copies the values without requantizing them, and so do these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext, OutputType

OPCODES = ("TRANSPOSE", "SLICE", "STRIDED_SLICE")
MAX_RANK = 6  # LiteRT's TRANSPOSE limit; SLICE and STRIDED_SLICE take 5
LARGE_END = 2**30  # an end this large means "to the end of the axis"


@dataclass
class ViewParams:
    perm: tuple[int, ...] | None  # TRANSPOSE
    keys: tuple | None  # SLICE / STRIDED_SLICE: one slice or index per axis
    out_shape: tuple[int, ...]  # the output shape, per sample (batch axis dropped)
    shape: tuple[int, ...]  # the view's shape: out_shape, or (1,) for a scalar per sample
    start: int
    strides: tuple[int, ...]


def _constant_vector(ctx: OpContext, k: int, what: str, length: int) -> list[int]:
    t = ctx.input(k)
    if t is None:
        raise ctx.malformed(f"the {what} input is missing")
    if not t.is_constant or t.dtype not in (np.int32, np.int64):
        raise ctx.fail(f"the {what} must be a constant integer vector")
    values = [int(v) for v in np.asarray(t.data).reshape(-1)]
    if len(values) != length:
        raise ctx.malformed(f"the {what} has {len(values)} entries for a rank-{length} input")
    return values


def _input(ctx: OpContext, n_inputs: int):
    x = ctx.input(0)
    if x is None or len(ctx.op.inputs) != n_inputs:
        raise ctx.malformed(f"{ctx.op.opcode} takes {n_inputs} inputs")
    if not 1 <= len(x.shape) <= MAX_RANK:
        raise ctx.fail(f"a rank-{len(x.shape)} input is beyond LiteRT's limit of {MAX_RANK}")
    return x


def _perm(ctx: OpContext) -> tuple[int, ...]:
    x = _input(ctx, 2)
    perm = _constant_vector(ctx, 1, "permutation", len(x.shape))
    perm = [p + len(perm) if p < 0 else p for p in perm]
    if sorted(perm) != list(range(len(perm))):
        raise ctx.malformed(f"{perm} is not a permutation of the input's axes")
    if perm[0] != 0:
        raise ctx.fail("the permutation moves the batch axis")
    return tuple(perm)


def _slice_keys(ctx: OpContext) -> tuple:
    x = _input(ctx, 3)
    rank = len(x.shape)
    begin = _constant_vector(ctx, 1, "begin", rank)
    size = _constant_vector(ctx, 2, "size", rank)
    keys = []
    for axis, (b, s, dim) in enumerate(zip(begin, size, x.shape, strict=True)):
        end = dim if s == -1 else b + s
        if not (0 <= b <= end <= dim) or s < -1:
            raise ctx.malformed(f"begin {b}, size {s} is outside axis {axis} ({dim})")
        keys.append(slice(b, end, 1))
    return tuple(keys)


def _strided_slice_keys(ctx: OpContext) -> tuple:
    x = _input(ctx, 4)
    rank = len(x.shape)
    opts = ctx.op.options
    if opts.get("ellipsis_mask", 0) or opts.get("new_axis_mask", 0) or opts.get("offset", False):
        raise ctx.fail("ellipsis, new-axis and offset slicing are not supported")
    masks = [ctx.option(name, 0, 0) for name in ("begin_mask", "end_mask", "shrink_axis_mask")]
    begin, end, strides = (_constant_vector(ctx, k, what, rank) for k, what in
                           ((1, "begin"), (2, "end"), (3, "strides")))
    keys = []
    for axis in range(rank):
        b, e, s, dim = begin[axis], end[axis], strides[axis], x.shape[axis]
        if s == 0:
            raise ctx.malformed(f"stride 0 on axis {axis}")
        if masks[2] >> axis & 1:
            index = b + dim if b < 0 else b
            if not 0 <= index < dim:
                raise ctx.malformed(f"index {b} is outside axis {axis} ({dim})")
            keys.append(index)
            continue
        keys.append(slice(None if masks[0] >> axis & 1 else b, None if masks[1] >> axis & 1 else e, s))
    _check_batch_key(ctx, keys[0], masks[1] & 1 == 0)
    return tuple(keys)


def _check_batch_key(ctx: OpContext, key, end_given: bool) -> None:
    x = ctx.input(0)
    whole = isinstance(key, slice) and key.step == 1 and key.start in (None, 0)
    if whole and end_given:
        # An explicit end keeps the whole batch only if it is past any batch LiteRT may run.
        dynamic = bool(x.shape_signature) and x.shape_signature[0] < 0
        whole = key.stop >= LARGE_END or (not dynamic and key.stop >= x.shape[0])
    if not whole:
        raise ctx.fail("the slice does not keep the whole batch axis")


def _keys(ctx: OpContext) -> tuple:
    keys = _slice_keys(ctx) if ctx.op.opcode == "SLICE" else _strided_slice_keys(ctx)
    if ctx.op.opcode == "SLICE":
        x = ctx.input(0)
        size0 = _constant_vector(ctx, 2, "size", len(x.shape))[0]
        _check_batch_key(ctx, keys[0] if size0 != -1 else slice(0, None, 1), size0 != -1)
    return keys


def _apply(p_perm, p_keys, x: np.ndarray) -> np.ndarray:
    if p_perm is not None:
        return np.transpose(x, p_perm)
    return x[(slice(None), *p_keys[1:])]


def infer_output(ctx: OpContext) -> OutputType:
    x = ctx.input(0)
    if ctx.op.opcode == "TRANSPOSE":
        perm = _perm(ctx)
        return OutputType.of([x.shape[p] for p in perm], x.dtype)
    keys = _keys(ctx)
    shape = [len(range(*k.indices(d))) for k, d in zip(keys, x.shape, strict=True) if isinstance(k, slice)]
    return OutputType.of(shape, x.dtype)


def prepare(ctx: OpContext) -> ViewParams:
    x, y = ctx.input(0), ctx.output()
    ctx.require_int8(x, y)
    if x.is_constant:
        raise ctx.fail(f"{ctx.op.opcode} of a constant is not supported")
    perm = _perm(ctx) if ctx.op.opcode == "TRANSPOSE" else None
    keys = None if perm is not None else _keys(ctx)
    if y.size == 0:
        raise ctx.fail("the output is empty")
    numbers = np.arange(int(np.prod(x.shape[1:], dtype=np.int64)), dtype=np.int64).reshape((1, *x.shape[1:]))
    picked = _apply(perm, keys, numbers)[0]
    shape = picked.shape or (1,)
    picked = picked.reshape(shape)
    start = int(picked.flat[0])
    strides = []
    for axis, dim in enumerate(shape):
        unit = [0] * len(shape)
        unit[axis] = 1 if dim > 1 else 0
        strides.append(int(picked[tuple(unit)]) - start)
    affine = start + sum(g * s for g, s in zip(np.indices(shape, dtype=np.int64), strides, strict=True))
    if not np.array_equal(affine, picked):  # not reachable for these ops; kept as the proof
        raise ctx.fail("the selection is not one strided view")
    return ViewParams(perm, keys, tuple(y.shape[1:]), tuple(shape), start, tuple(strides))


def reference(p: ViewParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    return np.ascontiguousarray(_apply(p.perm, p.keys, x)).reshape((x.shape[0], *p.out_shape))


def native_kind(p: ViewParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_STRIDED_VIEW


def describe(p: ViewParams, d, shared: dict) -> list:
    d.view_rank = len(p.shape)
    for k, (dim, stride) in enumerate(zip(p.shape, p.strides, strict=True)):
        d.view_shape[k] = dim
        d.view_stride[k] = stride
    d.view_start = p.start
    return []
