"""A readable account of a model: what `edged inspect` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edged.model.ir import Graph, Tensor
from edged.ops import OPS


def _quant(t: Tensor) -> dict[str, Any] | None:
    if t.quant is None:
        return None
    q = t.quant
    if q.per_channel:
        return {
            "per_channel": True,
            "axis": q.axis,
            "channels": int(q.scale.size),
            "scale_min": float(q.scale.min()),
            "scale_max": float(q.scale.max()),
            "zero_point": sorted({int(z) for z in q.zero_point}),
        }
    return {"per_channel": False, "scale": float(q.scale[0]), "zero_point": int(q.zero_point[0])}


def describe_model(graph: Graph, path: str | Path | None = None) -> dict[str, Any]:
    """Ops, tensors, shapes, quantization, parameter count and size, as plain data."""
    tensors = [
        {
            "index": i,
            "name": t.name,
            "dtype": str(t.dtype),
            "shape": list(t.shape),
            "constant": t.is_constant,
            "quantization": _quant(t),
        }
        for i, t in enumerate(graph.tensors)
    ]
    ops = [
        {
            "index": i,
            "op": op.custom_code if op.opcode == "CUSTOM" else op.opcode,
            "inputs": op.inputs,
            "outputs": op.outputs,
            "activation": op.options.get("fused_activation_function"),
            "native": op.opcode in OPS,
        }
        for i, op in enumerate(graph.operators)
    ]
    info: dict[str, Any] = {
        "name": graph.name,
        "description": graph.description,
        "inputs": [tensors[i] for i in graph.inputs],
        "outputs": [tensors[i] for i in graph.outputs],
        "operators": ops,
        "tensors": tensors,
        "parameters": graph.parameter_count(),
        "constant_bytes": sum(t.nbytes for t in graph.tensors if t.is_constant),
        "native_supported": all(o["native"] for o in ops),
    }
    if path is not None:
        info["path"] = str(path)
        info["file_bytes"] = Path(path).stat().st_size
    return info


def _shape(t: dict[str, Any]) -> str:
    return "x".join(str(d) for d in t["shape"]) or "scalar"


def _qtext(q: dict[str, Any] | None) -> str:
    if q is None:
        return "-"
    if q["per_channel"]:
        return f"per-channel[{q['channels']}] s={q['scale_min']:.3g}..{q['scale_max']:.3g}"
    return f"s={q['scale']:.6g} zp={q['zero_point']}"


def format_model(info: dict[str, Any]) -> str:
    lines = [f"model      {info.get('path', info['name'])}"]
    if "file_bytes" in info:
        lines.append(f"size       {info['file_bytes']:,} bytes")
    lines.append(f"parameters {info['parameters']:,} ({info['constant_bytes']:,} bytes of constants)")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            lines.append(
                f"{kind[:-1]:<10} {t['name']}: {t['dtype']} [{_shape(t)}] {_qtext(t['quantization'])}"
            )
    lines.append("")
    lines.append(f"{'#':>3}  {'op':<20} {'output':<16} {'activation':<10} quantization")
    by_index = {t["index"]: t for t in info["tensors"]}
    for op in info["operators"]:
        out = by_index[op["outputs"][0]] if op["outputs"] else None
        mark = "" if op["native"] else "  (not native: --engine litert)"
        lines.append(
            f"{op['index']:>3}  {op['op']:<20} {(_shape(out) if out else '-'):<16} "
            f"{(op['activation'] or '-'):<10} {_qtext(out['quantization']) if out else '-'}{mark}"
        )
    lines.append("")
    lines.append(f"{'#':>3}  {'tensor':<28} {'dtype':<8} {'shape':<14} {'kind':<10} quantization")
    for t in info["tensors"]:
        kind = "constant" if t["constant"] else "activation"
        lines.append(
            f"{t['index']:>3}  {t['name'][:28]:<28} {t['dtype']:<8} {_shape(t):<14} {kind:<10} "
            f"{_qtext(t['quantization'])}"
        )
    lines.append("")
    lines.append(
        f"{len(info['tensors'])} tensors, {len(info['operators'])} operators; native engine: "
        + ("yes" if info["native_supported"] else "no")
    )
    return "\n".join(lines)
