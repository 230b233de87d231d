"""Whole-channel removal: the output channels of a layer taken out of the model, physically.

A *channel group* is what must shrink together when some output channels of
a FULLY_CONNECTED or CONV_2D go: the tensors that carry those channels
through channel-wise ops (pooling, activations, PAD without channel padding,
DEPTHWISE_CONV_2D with multiplier 1, which loses them too), the layers that
read them (a CONV_2D's input channels, a FULLY_CONNECTED's columns, directly
or after a RESHAPE that flattens NHWC, where channel c is every column
j with j % C == c), and, through a residual ADD, every other layer feeding
that ADD: layers tied by an ADD share one keep-mask. The model that comes out
is smaller, so dense LiteRT gets faster too, and every weight left is
untouched (so both engines still agree bit for bit).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from edged.model.ir import Graph

PRODUCERS = ("FULLY_CONNECTED", "CONV_2D")
CHANNELWISE = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RELU", "RELU6", "LOGISTIC", "TANH")


@dataclass
class ChannelGroup:
    """Everything that loses the same channels. ``channels`` is how many there are now."""

    producers: list[int]
    channels: int
    tensors: set[int] = field(default_factory=set)  # activations whose last axis shrinks
    depthwise: list[int] = field(default_factory=list)  # DEPTHWISE_CONV_2D passed through
    readers: list[tuple[int, int]] = field(default_factory=list)  # (FC / CONV op, spatial repeat)
    reshapes: list[int] = field(default_factory=list)  # flattening RESHAPEs on the way to an FC

    @property
    def key(self) -> int:
        return min(self.producers)


def channel_group(graph: Graph, op_index: int) -> ChannelGroup:
    """The group the output channels of ``op_index`` belong to; ValueError naming the op that
    cannot follow a removal."""
    op = graph.operators[op_index]
    if op.opcode not in PRODUCERS:
        raise ValueError(f"op #{op_index} is {op.opcode}: only FULLY_CONNECTED and CONV_2D "
                         "outputs lose channels")
    consumers, producers = graph.consumers(), graph.producers()
    channels = graph.tensors[op.outputs[0]].shape[-1]
    group = ChannelGroup([op_index], channels)
    todo = [op.outputs[0]]

    def add_producer_of(t: int, via: int) -> None:
        """The ADD input ``t`` must come from a layer whose channels can go too."""
        while True:
            p = producers.get(t)
            if p is None:
                raise ValueError(f"ADD op #{via} adds a tensor no layer computes; "
                                 "its channels cannot be removed")
            src = graph.operators[p]
            if src.opcode in PRODUCERS:
                if p not in group.producers:
                    group.producers.append(p)
                    todo.append(src.outputs[0])
                return
            if src.opcode not in CHANNELWISE:
                raise ValueError(f"ADD op #{via} adds the output of op #{p} ({src.opcode}), "
                                 "whose channels cannot be removed")
            t = src.inputs[0]

    while todo:
        t = todo.pop()
        if t in group.tensors:
            continue
        if t in graph.outputs:
            raise ValueError(f"tensor '{graph.tensors[t].name}' is a model output; "
                             "its channels cannot be removed")
        group.tensors.add(t)
        for u in consumers.get(t, []):
            user = graph.operators[u]
            where = f"op #{u} ({user.opcode})"
            if user.opcode in PRODUCERS:
                if user.inputs[0] != t:
                    raise ValueError(f"{where} reads the channels as weights")
                if (u, 1) not in group.readers:
                    group.readers.append((u, 1))
            elif user.opcode in CHANNELWISE:
                todo.append(user.outputs[0])
            elif user.opcode == "DEPTHWISE_CONV_2D":
                if user.options.get("depth_multiplier", 1) != 1 or user.inputs[0] != t:
                    raise ValueError(f"{where} has a depth multiplier; its channels cannot follow")
                if u not in group.depthwise:
                    group.depthwise.append(u)
                todo.append(user.outputs[0])
            elif user.opcode == "PAD":
                pads = graph.tensors[user.inputs[1]].data
                if pads is None or np.any(np.asarray(pads)[-1] != 0):
                    raise ValueError(f"{where} pads the channel axis")
                todo.append(user.outputs[0])
            elif user.opcode == "ADD":
                for other in user.inputs:
                    if other != t:
                        add_producer_of(other, u)
                todo.append(user.outputs[0])
            elif user.opcode == "RESHAPE":
                _flatten_reader(graph, consumers, group, t, u)
            else:
                raise ValueError(f"{where} reads the channels; removal cannot follow through it")
    group.producers.sort()
    return group


def _flatten_reader(graph: Graph, consumers, group: ChannelGroup, t: int, u: int) -> None:
    """A RESHAPE of NHWC [.., C] to [.., H*W*C] whose only reader is a FULLY_CONNECTED."""
    src, out = graph.tensors[t], graph.tensors[graph.operators[u].outputs[0]]
    spatial = int(np.prod(src.shape[1:], dtype=np.int64)) // src.shape[-1]
    users = consumers.get(graph.operators[u].outputs[0], [])
    flat = len(out.shape) == 2 and out.shape[-1] == spatial * src.shape[-1]
    if not flat or len(users) != 1 or graph.operators[users[0]].opcode != "FULLY_CONNECTED":
        raise ValueError(f"op #{u} (RESHAPE) does not flatten into a FULLY_CONNECTED; channels cannot follow")
    group.reshapes.append(u)
    group.readers.append((users[0], spatial))


def removable_groups(graph: Graph) -> dict[int, ChannelGroup]:
    """Every channel group the graph has, keyed by its first producer."""
    groups: dict[int, ChannelGroup] = {}
    for i, op in enumerate(graph.operators):
        if op.opcode not in PRODUCERS or graph.tensors[op.inputs[1]].data is None:
            continue
        if any(i in g.producers for g in groups.values()):
            continue
        try:
            group = channel_group(graph, i)
        except ValueError:
            continue
        groups[group.key] = group
    return groups


def _slice_channels(t, keep: np.ndarray, axis: int) -> None:
    """Keep ``keep`` along ``axis`` of a constant (data, shape, per-channel quantization)."""
    t.data = np.compress(keep, t.data, axis=axis)
    t.shape = tuple(t.data.shape)
    q = t.quant
    if q is not None and np.asarray(q.scale).size > 1:
        q.scale, q.zero_point = np.asarray(q.scale)[keep], np.asarray(q.zero_point)[keep]


def remove_group_channels(graph: Graph, group: ChannelGroup, keep: np.ndarray) -> Graph:
    """A copy of ``graph`` without the channels of ``group`` where ``keep`` is False."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (group.channels,) or not keep.any():
        raise ValueError(f"keep must be {group.channels} booleans with at least one True")
    g = copy.deepcopy(graph)
    k = int(keep.sum())
    for p in group.producers:
        op = g.operators[p]
        _slice_channels(g.tensors[op.inputs[1]], keep, 0)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            _slice_channels(g.tensors[op.inputs[2]], keep, 0)
    for d in group.depthwise:
        op = g.operators[d]
        _slice_channels(g.tensors[op.inputs[1]], keep, 3)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            _slice_channels(g.tensors[op.inputs[2]], keep, 0)
    for t in group.tensors:
        tensor = g.tensors[t]
        tensor.shape = (*tensor.shape[:-1], k)
        if tensor.shape_signature is not None:
            tensor.shape_signature = (*tensor.shape_signature[:-1], k)
    for u in group.reshapes:
        op = g.operators[u]
        out = g.tensors[op.outputs[0]]
        width = out.shape[-1] // group.channels * k
        out.shape = (*out.shape[:-1], width)
        if out.shape_signature is not None:
            out.shape_signature = (*out.shape_signature[:-1], width)
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and g.tensors[op.inputs[1]].data is not None:
            shape_t = g.tensors[op.inputs[1]]
            shape_t.data = shape_t.data.copy()
            shape_t.data.reshape(-1)[-1] = width
        if op.options.get("new_shape"):
            op.options = {**op.options, "new_shape": [*op.options["new_shape"][:-1], width]}
    for reader, spatial in group.readers:
        w = g.tensors[g.operators[reader].inputs[1]]
        w.data = np.compress(np.tile(keep, spatial), w.data, axis=w.data.ndim - 1)
        w.shape = tuple(w.data.shape)
    return g


def channel_scores(graph: Graph, group: ChannelGroup) -> np.ndarray:
    """How much each channel matters: the weight it receives times the weight it sends on."""
    received = np.zeros(group.channels)
    for p in group.producers:
        w = graph.tensors[graph.operators[p].inputs[1]]
        received += np.abs(w.data.astype(np.float64)).reshape(group.channels, -1).sum(axis=1) / w.data.size
    sent = np.zeros(group.channels)
    for reader, spatial in group.readers:
        w = graph.tensors[graph.operators[reader].inputs[1]].data.astype(np.float64)
        per_column = np.abs(w).reshape(-1, w.shape[-1]).sum(axis=0)  # [spatial * C] or [C]
        sent += per_column.reshape(spatial, group.channels).sum(axis=0) / w.size
    return received * (sent if group.readers else 1.0)
