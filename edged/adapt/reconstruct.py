"""One-shot reconstruction after pruning: the weights a layer keeps absorb what the pruned ones did.

Masking alone never changes a surviving weight, so past ~80 % sparsity the
outputs drift away from the dense layer's. Here each output row is solved
for again (optimal brain surgeon, in the column sweep of SparseGPT): with the
layer's calibration inputs X (dequantized, im2col patches for CONV_2D, plus a
constant 1 so the bias is solved for too), H = XᵀX + λ·mean(diag H)·I and U
the upper Cholesky factor of H⁻¹, the input columns are visited in order;
pruning column j moves its error w_j / U_jj onto the later columns through
row j of U, so ‖XW − XŴ‖ stays as small as the mask allows.

Masks come in the block shapes the sparse kernels run (R output channels x C
consecutive inputs, edged.sparse.block_csr). A block spanning several rows is
kept or dropped for all of them: in each chunk of columns, the blocks with
the smallest saliency Σ w²/U_jj² over the block go. A fixed mask (a
strategy's) is honoured as it is instead, and only the update is done.

Layers are handled in graph order, each on the inputs the already
reconstructed earlier layers produce (the int8 numpy reference re-run), and
re-quantized (edged.adapt.requantize), so the file holds the reconstructed weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from edged.adapt.calibration import PRUNABLE
from edged.adapt.requantize import float_weights, set_float_weights
from edged.errors import EdgedError
from edged.model.ir import Graph
from edged.sparse.block_csr import BlockShape, block_view

DAMPING = 0.01  # λ, relative to the mean of diag(H), as in SparseGPT
CHUNK = 128  # columns whose mask is chosen together (a multiple of the block's width)
MAX_ROWS = 32768  # input rows kept per layer for H (a seeded subsample beyond that)


class CalibrationError(EdgedError):
    """Calibration data that cannot be fed to the model (shape, dtype, non-finite values)."""


@dataclass
class ReconstructedLayer:
    op_index: int
    sparsity: float  # fraction of weights the mask removes
    error_masked: float  # ‖XW − XŴ‖² / ‖XW‖² with the mask alone
    error_reconstructed: float  # the same after reconstruction (before int8 rounding)


def check_calibration(graph: Graph, x: np.ndarray) -> np.ndarray:
    """``x`` as the model's input batch, or CalibrationError saying what is wrong with it."""
    spec = graph.input_tensors[0]
    x = np.asarray(x)
    want = f"{np.dtype(spec.dtype).name} [N, {', '.join(str(d) for d in spec.shape[1:])}]"
    if x.ndim != len(spec.shape) or tuple(x.shape[1:]) != tuple(spec.shape[1:]) or x.shape[0] < 1:
        raise CalibrationError(f"calibration inputs are {x.dtype} {list(x.shape)}; the model takes {want}")
    if x.dtype != spec.dtype:
        raise CalibrationError(f"calibration inputs are {x.dtype}; the model takes {want}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise CalibrationError("calibration inputs hold NaN or infinite values")
    return x


def layer_features(graph: Graph, x: np.ndarray, op_index: int) -> np.ndarray:
    """The dequantized rows operator ``op_index`` multiplies its weights with, on model input ``x``:
    [N, depth] for FULLY_CONNECTED, [N*out_h*out_w, kh*kw*in_c] im2col patches for CONV_2D."""
    from edged.ops.conv import im2col_patches
    from edged.runtime.prepared import prepare_graph

    op = graph.operators[op_index]
    if op.opcode not in PRUNABLE:
        raise ValueError(f"operator #{op_index} is {op.opcode}; only {', '.join(PRUNABLE)} are reconstructed")
    values = {graph.inputs[0]: x}
    for step in prepare_graph(graph).steps:
        args = [values[t] for t in step.activation_inputs]
        if step.index == op_index:
            a = args[0]
            break
        values[step.output] = step.module.reference(step.params, args)
    else:
        raise ValueError(f"operator #{op_index} is not reached from the model input")
    t, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    scale = float(np.asarray(t.quant.scale).reshape(-1)[0])
    depth = int(np.prod(w.shape[1:]))
    if op.opcode == "CONV_2D":  # im2col_patches already subtracts the zero point
        p = step.params
        return im2col_patches(p, a.reshape((-1, *p.in_hwc))).reshape(-1, depth).astype(np.float64) * scale
    zp = float(np.asarray(t.quant.zero_point).reshape(-1)[0])
    return (a.reshape(-1, depth).astype(np.float64) - zp) * scale


def _rows(features: np.ndarray, with_bias: bool) -> np.ndarray:
    """At most MAX_ROWS rows (the same seeded choice for equally long inputs), a 1 appended for the bias."""
    x = features
    if len(x) > MAX_ROWS:
        x = x[np.sort(np.random.default_rng(0).choice(len(x), MAX_ROWS, replace=False))]
    return np.hstack([x, np.ones((len(x), 1))]) if with_bias else x


def gram(features: np.ndarray, with_bias: bool = True) -> np.ndarray:
    """XᵀX of the features (a constant-1 column appended for the bias), undamped."""
    x = _rows(features, with_bias)
    return x.T @ x


def retarget(dense: np.ndarray, features: np.ndarray, target_features: np.ndarray,
             damping: float = DAMPING) -> np.ndarray:
    """Weights [out, depth (+1)] that map ``features`` (what the layer now sees, after the layers
    before it were pruned) closest to what ``dense`` made of ``target_features`` (what it saw in
    the dense model): W + (X̃ᵀX̃ + λ)⁻¹ X̃ᵀ(X − X̃) W, so upstream error is undone here, not carried on."""
    with_bias = dense.shape[1] == features.shape[1] + 1
    now, then = _rows(features, with_bias), _rows(target_features, with_bias)
    if now.shape != then.shape:
        raise ValueError(f"features {list(features.shape)} and targets {list(target_features.shape)} differ")
    h = now.T @ now
    h[np.diag_indices_from(h)] += damping * (float(np.mean(np.diag(h))) or 1.0)
    return dense + np.linalg.solve(h, now.T @ ((then - now) @ dense.T)).T


def inverse_cholesky(h: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Upper U with Uᵀ U = (H + λ·mean(diag H)·I)⁻¹; λ grows tenfold until H is positive definite."""
    if damping <= 0:
        raise ValueError(f"damping must be positive, got {damping}")
    mean_diag = float(np.mean(np.diag(h))) or 1.0
    eye = np.eye(len(h))
    for _ in range(6):
        try:
            lower = np.linalg.cholesky(h + damping * mean_diag * eye)
            inv_lower = np.linalg.solve(lower, eye)  # H⁻¹ = L⁻ᵀ L⁻¹
            return np.linalg.cholesky(inv_lower.T @ inv_lower).T
        except np.linalg.LinAlgError:
            damping *= 10
    raise ValueError("the calibration inputs' Gram matrix stays singular under damping")


def _chunk_block_keep(saliency: np.ndarray, block: BlockShape, n_drop: int) -> np.ndarray:
    """Keep-mask over the columns of a chunk: its ``n_drop`` least salient blocks go."""
    sums = block_view(saliency, block).sum(axis=(1, 3))
    keep = np.ones(sums.size, dtype=bool)
    keep[np.argsort(sums, axis=None, kind="stable")[:n_drop]] = False
    full = np.repeat(np.repeat(keep.reshape(sums.shape), block.rows, axis=0), block.cols, axis=1)
    return full[: saliency.shape[0], : saliency.shape[1]]


def prune_and_reconstruct(weights: np.ndarray, upper: np.ndarray, block: BlockShape,
                          sparsity: float | None = None, keep: np.ndarray | None = None,
                          prunable: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Prune ``weights`` [out, total] and update the survivors; returns (new weights, keep [out, k]).

    ``upper`` is ``inverse_cholesky`` of the Gram matrix of the same columns;
    only the first ``prunable`` columns (k, all by default) may be pruned, the
    rest (the bias column) are only updated. Either ``sparsity`` (the fraction
    of ``block`` blocks of the k columns, chosen by OBS saliency) or a fixed
    ``keep`` mask [out, k] is given."""
    w = np.array(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D [out, depth] matrix, got shape {list(w.shape)}")
    out, total = w.shape
    k = total if prunable is None else int(prunable)
    if not 1 <= k <= total:
        raise ValueError(f"{k} prunable columns out of {total}")
    if upper.shape != (total, total):
        raise ValueError(f"the inverse Cholesky factor is {list(upper.shape)}, not [{total}, {total}]")
    if (sparsity is None) == (keep is None):
        raise ValueError("give exactly one of a sparsity or a keep mask")
    if keep is not None:
        keep = np.array(keep, dtype=bool)
        if keep.shape != (out, k):
            raise ValueError(f"keep mask {list(keep.shape)} does not fit the weights' {[out, k]}")
    else:
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be within [0, 1], got {sparsity}")
        keep = np.ones((out, k), dtype=bool)
    if (sparsity or 0) > 0 or not keep.all():  # nothing pruned: nothing to move
        _sweep(w, upper, k, block, keep, sparsity)
    return w, keep


def _sweep(w: np.ndarray, upper: np.ndarray, k: int, block: BlockShape, keep: np.ndarray,
           sparsity: float | None) -> np.ndarray:
    """The column sweep in place on ``w``; fills ``keep`` when ``sparsity`` is given."""
    out, total = w.shape
    step = max(block.cols, CHUNK // block.cols * block.cols)
    block_rows = -(-out // block.rows)
    blocks_before = 0
    for c0 in range(0, k, step):
        c1 = min(c0 + step, k)
        u = upper[c0:c1, c0:c1]
        chunk = w[:, c0:c1]  # a view: updated in place
        if sparsity is not None:
            blocks_after = block_rows * -(-c1 // block.cols)
            n_drop = round(sparsity * blocks_after) - round(sparsity * blocks_before)
            blocks_before = blocks_after
            saliency = chunk**2 / np.diag(u)[None, :] ** 2
            keep[:, c0:c1] = _chunk_block_keep(saliency, block, n_drop)
        errors = np.zeros_like(chunk)
        for j in range(c1 - c0):
            col = chunk[:, j]
            err = np.where(keep[:, c0 + j], 0.0, col) / u[j, j]
            chunk[:, j:] -= np.outer(err, u[j, j:])
            chunk[:, j] = np.where(keep[:, c0 + j], chunk[:, j], 0.0)  # exactly zero, not ~1e-17
            errors[:, j] = err
        if c1 < total:
            w[:, c1:] -= errors @ upper[c0:c1, c1:]
    return keep


def relative_error(x: np.ndarray, before: np.ndarray, after: np.ndarray,
                   target_x: np.ndarray | None = None) -> float:
    """‖X_t beforeᵀ − X afterᵀ‖² / ‖X_t beforeᵀ‖² for weights [out, depth (+1 bias)] on features X
    (and X_t, the dense model's, when given; else X)."""
    with_bias = before.shape[1] == x.shape[1] + 1
    xs = _rows(x, with_bias)
    ref = (xs if target_x is None else _rows(target_x, with_bias)) @ before.T
    return float(np.sum((ref - xs @ after.T) ** 2) / max(np.sum(ref**2), 1e-30))


def _float_bias(graph: Graph, op_index: int) -> np.ndarray | None:
    op = graph.operators[op_index]
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return None
    b = graph.tensors[op.inputs[2]]
    return b.data.astype(np.float64) * np.asarray(b.quant.scale, dtype=np.float64).reshape(-1)


def _set_float_bias(graph: Graph, op_index: int, bias: np.ndarray) -> None:
    b = graph.tensors[graph.operators[op_index].inputs[2]]
    scale = np.asarray(b.quant.scale, dtype=np.float64).reshape(-1)
    b.data = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)


def reconstruct_layer(graph: Graph, op_index: int, features: np.ndarray, block: BlockShape,
                      sparsity: float | None = None, keep: np.ndarray | None = None,
                      damping: float = DAMPING, upper: np.ndarray | None = None,
                      dense: np.ndarray | None = None,
                      target_features: np.ndarray | None = None) -> ReconstructedLayer:
    """Prune operator ``op_index`` of ``graph`` in place (to ``sparsity`` in ``block`` blocks by OBS
    saliency, or to a fixed ``keep`` mask of the weights' shape), reconstruct the survivors and the
    bias on ``features`` (``layer_features``), and re-quantize. ``dense`` [out, depth (+1)] gives
    the float weights (and bias) to start from, else the graph's own; ``upper`` a precomputed
    ``inverse_cholesky`` of the features' Gram matrix; ``target_features``, what the layer saw in
    the dense model, makes the dense model's outputs the target (``retarget``)."""
    w_shape = graph.tensors[graph.operators[op_index].inputs[1]].shape
    out, depth = w_shape[0], int(np.prod(w_shape[1:]))
    if features.ndim != 2 or features.shape[1] != depth:
        raise ValueError(f"features {list(features.shape)} do not match op #{op_index}'s depth {depth}")
    bias = _float_bias(graph, op_index)
    if dense is None:
        dense = float_weights(graph, op_index).reshape(out, depth)
        if bias is not None:
            dense = np.hstack([dense, bias[:, None]])
    reference = dense
    if target_features is not None:
        dense = retarget(dense, features, target_features, damping)
    if upper is None and (keep is not None or sparsity):
        upper = inverse_cholesky(gram(features, with_bias=bias is not None), damping)
    elif upper is None:  # nothing is pruned: the factor is not needed
        upper = np.eye(dense.shape[1])
    flat_keep = None if keep is None else np.asarray(keep, dtype=bool).reshape(out, depth)
    new, kept = prune_and_reconstruct(dense, upper, block, sparsity, flat_keep, prunable=depth)
    masked = dense.copy()
    masked[:, :depth] *= kept
    before = relative_error(features, reference, masked, target_features)
    after = relative_error(features, reference, new, target_features)
    if not after <= before:
        # The sweep is greedy (a compensation moved onto a column pruned later is lost): where
        # it ends worse than the mask alone on these features, the layer keeps the masked weights.
        new, after = masked, before
    set_float_weights(graph, op_index, new[:, :depth].reshape(w_shape))
    if bias is not None:
        _set_float_bias(graph, op_index, new[:, depth])
    return ReconstructedLayer(op_index, 1.0 - float(kept.mean()), before, after)


def reconstruct_graph(graph: Graph, x: np.ndarray, plan: dict[int, tuple[BlockShape, float]],
                      masks: dict[int, np.ndarray] | None = None, damping: float = DAMPING,
                      retargeted: bool = True) -> tuple[Graph, list[ReconstructedLayer]]:
    """A copy of ``graph`` with each layer of ``plan`` ({op: (block, sparsity)}) pruned and
    reconstructed in graph order, each on the inputs the layers before it now produce; a layer in
    ``masks`` keeps that mask (True = kept) instead of choosing its own. ``retargeted``: each layer
    after the first change aims at the dense model's outputs of that layer, not at its own dense
    weights on its new inputs, and is re-fitted even where it is not pruned."""
    x = check_calibration(graph, x)
    masks = masks or {}
    g = copy.deepcopy(graph)
    done = []
    for i in sorted(plan):
        block, sparsity = plan[i]
        if i not in masks and sparsity <= 0 and not (retargeted and done):
            continue
        feats = layer_features(g, x, i)
        upstream_changed = bool(done)
        target = layer_features(graph, x, i) if retargeted and upstream_changed else None
        keep = masks.get(i)
        done.append(reconstruct_layer(g, i, feats, block, sparsity=None if keep is not None else sparsity,
                                      keep=keep, damping=damping, target_features=target))
    return g, done
