"""The float shadow of an int8 graph: forward with fake quantisation, backward by reverse mode.

``TrainGraph`` reads the IR (``edged.model.ir.Graph``) once: every constant is
dequantized, the weights and biases of FULLY_CONNECTED and CONV_2D layers
(the ones edged prunes and re-quantizes) become trainable float parameters,
and each weight's pruning mask is its non-zero pattern, held fixed. The
forward pass runs the ops of ``edged.train.ops`` in graph order; with
``quantize`` every int8 activation is fake-quantized on its own (fixed)
scale and zero point and every trainable weight on the per-channel grid it
will be exported with. A final SOFTMAX is left out: the output is the
logits it would see (times its beta), which is what losses want.

``export`` writes the parameters back into a copy of the graph through
``edged.adapt.requantize`` (fresh per-channel scales, exact zeros), so the
result is an ordinary int8 model the native engine and LiteRT run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.adapt.calibration import prunable_ops
from edged.errors import UnsupportedModelError
from edged.model.ir import Graph, Quantization, Tensor
from edged.runtime.prepared import prepare_graph
from edged.train import ops
from edged.train.fake_quant import fake_quant_activation, fake_quant_weights

TRAINABLE = ("FULLY_CONNECTED", "CONV_2D")
FUSED = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "SUB",
         "MUL", "CONCATENATION")
SHAPE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
PASS_OPS = ("QUANTIZE", "DEQUANTIZE")  # the value stays; fake quantisation moves it onto the new grid
# Ops whose output must keep its input's quantization (a recalibrated range flows through them).
TIED = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "PAD")
# Ops whose output range may be measured again on new data (the rest keep fixed output scales).
RANGED = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "MEAN", "HARD_SWISH")
SUPPORTED = (*FUSED, *SHAPE_OPS, *PASS_OPS, "MEAN", "PAD", "SOFTMAX", "LOGISTIC", "HARD_SWISH",
             *ops.CLAMPS)


class TrainingUnsupportedError(UnsupportedModelError):
    """The graph holds an operator the training engine has no gradient for."""


@dataclass
class Node:
    index: int
    opcode: str
    inputs: list[int]  # tensor indices, absent optional inputs dropped
    output: int
    activation: str  # fused activation, NONE if none
    extra: Any  # the op's static arguments (window, axes, shape, ...)


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    ranges: dict[int, tuple[float, int]]


def dequantize(t: Tensor, dtype=np.float32) -> np.ndarray:
    """A constant tensor's real values (per-channel scales along the quantization axis)."""
    data = t.data.astype(np.float64)
    if t.quant is None or t.dtype.kind == "f":
        return data.astype(dtype)
    scale = np.asarray(t.quant.scale, dtype=np.float64)
    zp = np.asarray(t.quant.zero_point, dtype=np.float64)
    if scale.size > 1:
        shape = [1] * data.ndim
        shape[t.quant.axis] = -1
        scale, zp = scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp)
    return ((data - zp) * scale).astype(dtype)


class TrainGraph:
    """See the module docstring. ``dtype`` float32 for training, float64 for gradient checks."""

    def __init__(self, graph: Graph, quantize: bool = True, dtype=np.float32,
                 masks: dict[int, np.ndarray] | None = None) -> None:
        self.graph = graph
        self.quantize = quantize
        self.dtype = np.dtype(dtype)
        prepared = prepare_graph(graph)
        self.nodes: list[Node] = []
        for step in prepared.steps:
            op = graph.operators[step.index]
            if op.opcode not in SUPPORTED:
                raise TrainingUnsupportedError(
                    f"operator #{step.index} is {op.opcode}, which fine-tuning has no gradient for")
            self.nodes.append(Node(step.index, op.opcode, [t for t in op.inputs if t >= 0], step.output,
                                   op.fused_activation if op.opcode in FUSED else "NONE",
                                   _static_arguments(op.opcode, step.params, graph, op)))
        self.output = graph.outputs[0]
        self.beta = 1.0
        last = self.nodes[-1]
        if last.opcode == "SOFTMAX" and last.output == self.output:
            self.nodes.pop()
            self.output = last.inputs[0]
            self.beta = float(graph.operators[last.index].options.get("beta", 1.0))
        self.constants = {i: dequantize(t, self.dtype) for i, t in enumerate(graph.tensors) if t.is_constant}
        self.params: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        for i in prunable_ops(graph):
            op = graph.operators[i]
            self.params[f"{i}:w"] = self.constants[op.inputs[1]].copy()
            keep = (graph.tensors[op.inputs[1]].data != 0) if masks is None or i not in masks else masks[i]
            self.masks[f"{i}:w"] = np.asarray(keep, dtype=self.dtype).reshape(self.params[f"{i}:w"].shape)
            self.params[f"{i}:w"] *= self.masks[f"{i}:w"]
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                self.params[f"{i}:b"] = self.constants[op.inputs[2]].copy()
        # (scale, zero point) of every int8 activation: the file's, until ``recalibrate`` measures new ones.
        self.ranges: dict[int, tuple[float, int]] = {}
        for node in self.nodes:
            t = graph.tensors[node.output]
            if t.dtype == np.int8 and t.quant is not None:
                self.ranges[node.output] = (t.quant.single_scale, t.quant.single_zero_point)
        self._tape: list[tuple[Node, Any, Any, np.ndarray | None]] = []

    # ------------------------------------------------------------------ forward

    def input_values(self, x: np.ndarray) -> np.ndarray:
        """The model input as reals: integer batches are dequantized, float ones taken as they are."""
        x = np.asarray(x)
        spec = self.graph.input_tensors[0]
        if x.dtype.kind in "iu" and spec.quant is not None:
            return ((x.astype(np.float64) - float(spec.quant.zero_point[0])) * float(spec.quant.scale[0])
                    ).astype(self.dtype)
        return x.astype(self.dtype)

    def forward(self, x: np.ndarray, train: bool = False,
                observe: dict[int, tuple[float, float]] | None = None) -> np.ndarray:
        """Logits [N, classes] (the final SOFTMAX's input times its beta) of the input batch ``x``;
        ``train`` keeps what ``backward`` needs; ``observe`` collects each activation's (min, max)
        and leaves activations unquantized."""
        values = {self.graph.inputs[0]: self.input_values(x)}
        tape = []
        for node in self.nodes:
            args = [values[t] if t in values else self.constants[t] for t in node.inputs]
            if node.opcode in TRAINABLE:
                args[1] = self._weights(node.index)
                if len(args) > 2:
                    args[2] = self.params[f"{node.index}:b"]
            y, cache = _FORWARD[node.opcode](node, args)
            out_t = self.graph.tensors[node.output]
            y = y.reshape((-1, *out_t.shape[1:]))
            y, act_cache = ops.clamp_forward(y, node.activation)
            inside = None
            if observe is not None:
                low, high = observe.get(node.output, (0.0, 0.0))
                observe[node.output] = (min(low, float(y.min())), max(high, float(y.max())))
            elif self.quantize and node.output in self.ranges:
                y, inside = fake_quant_activation(y, *self.ranges[node.output])
            values[node.output] = y
            if train:
                tape.append((node, cache, act_cache, inside))
        self._tape = tape
        out = values[self.output]
        return (out * self.beta).reshape(len(out), -1)

    def _weights(self, i: int) -> np.ndarray:
        w = self.params[f"{i}:w"]
        return fake_quant_weights(w) if self.quantize else w

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Logits of ``x`` in batches, keeping nothing for backward."""
        return np.concatenate([self.forward(x[s : s + batch]) for s in range(0, len(x), batch)])

    # ------------------------------------------------------------------ backward

    def backward(self, d_logits: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the parameters from the gradient of the last ``forward(train=True)``'s logits;
        the gradient of a pruned weight is zero."""
        return self._reverse(d_logits)[0]

    def input_gradient(self, d_logits: np.ndarray) -> np.ndarray:
        """The gradient of the model input (reals) from the last ``forward(train=True)``."""
        return self._reverse(d_logits)[1][self.graph.inputs[0]]

    def _reverse(self, d_logits: np.ndarray) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
        if not self._tape:
            raise RuntimeError("backward needs a forward pass with train=True first")
        grads: dict[int, np.ndarray] = {self.output: np.asarray(d_logits, self.dtype) * self.beta}
        out: dict[str, np.ndarray] = {}
        for node, cache, act_cache, inside in reversed(self._tape):
            dy = grads.pop(node.output, None)
            if dy is None:
                continue
            dy = dy.reshape((-1, *self.graph.tensors[node.output].shape[1:]))
            if inside is not None:
                dy = dy * inside
            (dy,) = ops.clamp_backward(dy, act_cache)
            d_args = _BACKWARD[node.opcode](node, dy, cache)
            for k, (t, d) in enumerate(zip(node.inputs, d_args, strict=False)):
                if d is None:
                    continue
                if node.opcode in TRAINABLE and k == 1:
                    out[f"{node.index}:w"] = d * self.masks[f"{node.index}:w"]
                elif node.opcode in TRAINABLE and k == 2:
                    out[f"{node.index}:b"] = d
                elif t not in self.constants:
                    grads[t] = grads[t] + d if t in grads else d
        self._tape = []
        return out, grads

    # ------------------------------------------------------------------ activation ranges

    def recalibrate(self, x: np.ndarray, batch: int = 256) -> int:
        """Measure the int8 ranges of the activations again on ``x`` (min/max widened to include 0, as
        the file's were made), where the op allows it: outputs of weighted, arithmetic and mean ops,
        and what flows unchanged from them through pooling and reshapes. A range fixed elsewhere
        (softmax, logistic, the model input, tensors feeding CONCATENATION) stays. Returns how many
        ranges changed. Under drift the old ranges clip, and a clipped activation passes no gradient."""
        seen: dict[int, tuple[float, float]] = {}
        for s in range(0, len(x), batch):
            self.forward(x[s : s + batch], observe=seen)
        consumers = self.graph.consumers()
        pinned = {t for t, users in consumers.items()
                  if any(self.graph.operators[u].opcode == "CONCATENATION" for u in users)}
        pinned |= set(self.graph.inputs)
        changed = 0
        for node in self.nodes:
            src = node.inputs[0] if node.inputs else -1
            if node.opcode in TIED and src in self.ranges and node.output in self.ranges:
                if self.graph.tensors[src].quant is not None and _same_quant(self.graph, src, node.output):
                    self.ranges[node.output] = self.ranges[src]
                continue
            if node.opcode not in RANGED or node.output not in self.ranges or node.output in pinned:
                continue
            if self._feeds_tied_pinned(node.output, consumers, pinned):
                continue
            low, high = seen[node.output]
            low, high = min(low, 0.0), max(high, 0.0)
            scale = float(np.float32(max(high - low, 1e-8) / 255.0))
            zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
            if (scale, zero_point) != self.ranges[node.output]:
                self.ranges[node.output] = (scale, zero_point)
                changed += 1
        return changed

    def _feeds_tied_pinned(self, t: int, consumers: dict[int, list[int]], pinned: set[int]) -> bool:
        """Whether ``t`` flows through tied ops into a tensor whose range must stay."""
        for u in consumers.get(t, []):
            op = self.graph.operators[u]
            if op.opcode in TIED and _same_quant(self.graph, t, op.outputs[0]):
                out = op.outputs[0]
                if out in pinned or self._feeds_tied_pinned(out, consumers, pinned):
                    return True
        return False

    # ------------------------------------------------------------------ parameters

    def snapshot(self) -> Checkpoint:
        return Checkpoint({k: v.copy() for k, v in self.params.items()}, dict(self.ranges))

    def restore(self, checkpoint: Checkpoint) -> None:
        for k, v in checkpoint.params.items():
            self.params[k][...] = v
        self.ranges = dict(checkpoint.ranges)

    def parameter_bytes(self) -> int:
        return sum(p.nbytes for p in self.params.values())

    def activation_bytes_per_row(self) -> int:
        """Bytes one input row costs a training step: each activation, its gradient and its
        fake-quantisation mask, and the patches convolutions and pools keep."""
        total = 0
        for node in self.nodes:
            size = int(np.prod(self.graph.tensors[node.output].shape[1:]))
            total += size * (3 * self.dtype.itemsize + 1)
            win = node.extra[0] if isinstance(node.extra, tuple) and node.extra and \
                isinstance(node.extra[0], ops.Window) else None
            if win is not None:  # the patches a convolution or pool keeps
                channels = self.graph.tensors[node.inputs[0]].shape[-1]
                patch = int(np.prod(win.out_hw)) * int(np.prod(win.kernel)) * channels
                total += 2 * patch * self.dtype.itemsize
        return total

    def export(self) -> Graph:
        """A copy of the graph with the trained weights and biases, re-quantized to int8."""
        from edged.adapt.requantize import set_float_weights

        g = copy.deepcopy(self.graph)
        for t, (scale, zero_point) in self.ranges.items():  # before the weights: bias scales follow them
            g.tensors[t].quant = Quantization(np.array([scale], np.float32), np.array([zero_point], np.int64))
        for i in prunable_ops(g):
            w = (self.params[f"{i}:w"] * self.masks[f"{i}:w"]).astype(np.float64)
            set_float_weights(g, i, w)
            if f"{i}:b" in self.params:
                b = g.tensors[g.operators[i].inputs[2]]
                scale = np.asarray(b.quant.scale, dtype=np.float64).reshape(-1)
                b.data = np.clip(np.round(self.params[f"{i}:b"].astype(np.float64) / scale),
                                 -(2**31), 2**31 - 1).astype(np.int32)
        return g


def _same_quant(graph: Graph, a: int, b: int) -> bool:
    qa, qb = graph.tensors[a].quant, graph.tensors[b].quant
    return qa is not None and qb is not None and np.array_equal(qa.scale, qb.scale) and \
        np.array_equal(qa.zero_point, qb.zero_point)


def _window(p) -> ops.Window:
    return ops.Window(tuple(p.kernel), tuple(p.stride), tuple(getattr(p, "dilation", (1, 1))), tuple(p.pad),
                      tuple(p.out_hwc[:2]))


def _static_arguments(opcode: str, params, graph: Graph, op) -> Any:
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _window(params), params.in_hwc, params.depth_multiplier
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return _window(params), params.in_hwc
    if opcode == "MEAN":
        return tuple(params.axes), bool(op.options.get("keep_dims", False))
    if opcode == "PAD":
        return tuple(tuple(p) for p in params.paddings)
    if opcode == "CONCATENATION":
        return params.axis
    if opcode == "SOFTMAX":
        return float(op.options.get("beta", 1.0))
    if opcode in SHAPE_OPS:
        return tuple(graph.tensors[op.outputs[0]].shape[1:])
    return None


def _nhwc(x: np.ndarray, in_hwc) -> np.ndarray:
    return x.reshape((-1, *in_hwc))


_FORWARD = {
    "FULLY_CONNECTED": lambda n, a: ops.fc_forward(a[0], a[1], a[2] if len(a) > 2 else None),
    "CONV_2D": lambda n, a: ops.conv_forward(_nhwc(a[0], n.extra[1]), a[1], a[2] if len(a) > 2 else None,
                                             n.extra[0]),
    "DEPTHWISE_CONV_2D": lambda n, a: ops.depthwise_forward(_nhwc(a[0], n.extra[1]), a[1],
                                                            a[2] if len(a) > 2 else None, n.extra[0],
                                                            n.extra[2]),
    "AVERAGE_POOL_2D": lambda n, a: ops.pool_forward(_nhwc(a[0], n.extra[1]), n.extra[0], True),
    "MAX_POOL_2D": lambda n, a: ops.pool_forward(_nhwc(a[0], n.extra[1]), n.extra[0], False),
    "MEAN": lambda n, a: ops.mean_forward(a[0], *n.extra),
    "ADD": lambda n, a: ops.add_forward(a[0], a[1]),
    "SUB": lambda n, a: ops.add_forward(a[0], a[1], subtract=True),
    "MUL": lambda n, a: ops.mul_forward(a[0], a[1]),
    "CONCATENATION": lambda n, a: ops.concat_forward(a, n.extra),
    "PAD": lambda n, a: ops.pad_forward(a[0], n.extra),
    "SOFTMAX": lambda n, a: ops.softmax_forward(a[0], n.extra),
    "LOGISTIC": lambda n, a: ops.logistic_forward(a[0]),
    "HARD_SWISH": lambda n, a: ops.hard_swish_forward(a[0]),
    **{k: (lambda n, a: ops.reshape_forward(a[0], (-1, *n.extra))) for k in SHAPE_OPS},
    **{k: (lambda n, a: (a[0], None)) for k in PASS_OPS},
    **{k: (lambda n, a, kind=k: ops.clamp_forward(a[0], kind)) for k in ops.CLAMPS},
}

_BACKWARD = {
    "FULLY_CONNECTED": lambda n, dy, c: ops.fc_backward(dy, c),
    "CONV_2D": lambda n, dy, c: ops.conv_backward(dy, c),
    "DEPTHWISE_CONV_2D": lambda n, dy, c: ops.depthwise_backward(dy, c),
    "AVERAGE_POOL_2D": lambda n, dy, c: ops.pool_backward(dy, c),
    "MAX_POOL_2D": lambda n, dy, c: ops.pool_backward(dy, c),
    "MEAN": lambda n, dy, c: ops.mean_backward(dy, c),
    "ADD": lambda n, dy, c: ops.add_backward(dy, c),
    "SUB": lambda n, dy, c: ops.add_backward(dy, c),
    "MUL": lambda n, dy, c: ops.mul_backward(dy, c),
    "CONCATENATION": lambda n, dy, c: ops.concat_backward(dy, c),
    "PAD": lambda n, dy, c: ops.pad_backward(dy, c),
    "SOFTMAX": lambda n, dy, c: ops.softmax_backward(dy, c),
    "LOGISTIC": lambda n, dy, c: ops.logistic_backward(dy, c),
    "HARD_SWISH": lambda n, dy, c: ops.hard_swish_backward(dy, c),
    **{k: (lambda n, dy, c: ops.reshape_backward(dy, c)) for k in SHAPE_OPS},
    **{k: (lambda n, dy, c: (dy,)) for k in PASS_OPS},
    **{k: (lambda n, dy, c: ops.clamp_backward(dy, c)) for k in ops.CLAMPS},
}
