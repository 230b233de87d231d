"""`edged compress`: prune, factorize or pattern a model on calibration data and write it."""

from __future__ import annotations

import argparse
import sys
import time

from edged.cli import _load_graph
from edged.errors import EdgedError


def compress(args: argparse.Namespace) -> int:
    """`edged compress`: see build_parser in edged/cli.py for the options."""
    from edged.adapt.calibration import load_calibration, prunable_ops
    from edged.adapt.compress import (
        STRATEGIES,
        Compressor,
        CompressResult,
        LayerPlan,
    )
    from edged.adapt.factorize import HMatrixCompressor, SvdCompressor
    from edged.sparse.block_csr import BlockShape

    graph = _load_graph(args.model)
    calib = load_calibration(args.calib, graph)
    factorized = {"hmatrix": HMatrixCompressor, "svd": SvdCompressor}
    if args.strategy == "pattern":
        return _compress_patterns(args, graph, calib)
    if args.strategy not in STRATEGIES and args.strategy not in factorized:
        names = ", ".join([*STRATEGIES, *factorized, "pattern"])
        raise EdgedError(f"unknown strategy {args.strategy!r}; choose one of {names}")
    if args.tolerance is not None and args.strategy not in factorized:
        raise EdgedError("--tolerance applies to the hmatrix and svd strategies")
    if args.tolerance is not None and not 0 < args.tolerance < 1:
        raise EdgedError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    if args.strategy in factorized and (args.tolerance is None) == (args.sparsity is None and
                                                                   args.kl_budget is None):
        raise EdgedError("give one of --tolerance, --kl-budget or --sparsity")
    layers = prunable_ops(graph)
    if not layers:
        raise EdgedError(f"{args.model}: no prunable layers (FULLY_CONNECTED / CONV_2D with int8 weights)")
    t0 = time.perf_counter()

    def progress(m: str) -> None:
        print(f"  [{time.perf_counter() - t0:6.1f} s] {m}", file=sys.stderr)

    if args.strategy in factorized:
        try:
            export = "hmatrix" if args.export == "hmatrix" else "dense"
            comp = factorized[args.strategy](graph, calib, progress=progress, export=export)
            if args.tolerance is not None:
                levels = {i: args.tolerance for i in comp.layers}
                candidate = comp.candidate(levels)
                result = CompressResult(candidate, [LayerPlan(i, BlockShape(1, 1), args.tolerance)
                                                    for i in comp.layers],
                                        comp.kl(candidate), comp.overall_sparsity(levels), [])
            else:
                result = comp.search(kl_budget=args.kl_budget, sparsity=args.sparsity)
            if args.export == "factors":
                from edged.adapt.lowrank_export import split_hmatrix

                forms = {p.op_index: comp.form(p.op_index, p.sparsity)
                         for p in result.layers if p.sparsity > 0}
                splits = []
                if forms:
                    result.graph, splits = split_hmatrix(graph, calib.x, forms,
                                                         sparse_storage=args.sparse_encoding)
                result.kl = comp.kl(result.graph)
                for sp in splits:
                    print(f"  op #{sp.op_index} served as FULLY_CONNECTED pieces of total rank {sp.rank}: "
                          f"{sp.factor_bytes} instead of {sp.dense_bytes} weight bytes")
            if args.export == "hmatrix":
                from edged.ops.hmatrix import CUSTOM_CODE

                print(f"  layers served as {CUSTOM_CODE}: "
                      f"{sum(op.custom_code == CUSTOM_CODE for op in result.graph.operators)}; only edged's "
                      "native engine runs this file (--export factors or dense for LiteRT)")
        except ValueError as exc:
            raise EdgedError(str(exc)) from exc
        return _write_compressed(args, graph, comp, result, t0, factor_forms=True)
    if args.sparsity is None and args.kl_budget is None:
        raise EdgedError("give --sparsity or --kl-budget")
    if args.block == "auto":
        blocks = _auto_blocks(graph, layers, args.sparsity or 0.9)
    else:
        try:
            blocks = {i: BlockShape.parse(args.block) for i in layers}
        except ValueError as exc:
            raise EdgedError(str(exc)) from exc
    comp = Compressor(graph, calib, STRATEGIES[args.strategy](), blocks, progress=progress,
                      reconstruct=getattr(args, "reconstruct", True))
    try:
        result = comp.search(kl_budget=args.kl_budget, sparsity=args.sparsity)
    except ValueError as exc:
        raise EdgedError(str(exc)) from exc
    if getattr(args, "finetune", False):
        _finetune(args, graph, calib, comp, result, progress)
    return _write_compressed(args, graph, comp, result, t0)


def _finetune(args, graph, calib, comp, result, progress) -> None:
    """Train the pruned candidate's kept weights (edged.train.finetune) in place of ``result``'s graph;
    SIGTERM stops it early and keeps the best checkpoint so far."""
    from edged.train.finetune import FinetuneConfig, finetune, stop_on_sigterm

    config = FinetuneConfig(time_budget_s=args.finetune_time_s, epochs=args.finetune_epochs,
                            memory_budget_bytes=int(args.finetune_memory_mb * (1 << 20)), seed=args.seed)
    with stop_on_sigterm() as stop:
        tuned = finetune(result.graph, graph, calib.x, calib.y, config, stop=stop, progress=progress)
    kl = comp.kl(tuned.graph)
    print(f"fine-tuned: {tuned.epochs} epochs, {tuned.steps} steps in {tuned.seconds:.1f} s "
          f"({tuned.stopped}); held-out loss {tuned.initial_loss:.5f} -> {tuned.best_loss:.5f}; "
          f"output KL {result.kl:.5f} -> {kl:.5f}")
    result.graph, result.kl = tuned.graph, kl


def _compress_patterns(args, graph, calib) -> int:
    from edged.adapt.calibration import prunable_ops
    from edged.adapt.patterns import PatternCompressor

    if args.tolerance is not None:
        raise EdgedError("--tolerance applies to the hmatrix and svd strategies")
    if args.sparsity is None and args.kl_budget is None:
        raise EdgedError("give --sparsity or --kl-budget")
    t0 = time.perf_counter()
    try:
        blocks = _auto_blocks(graph, prunable_ops(graph), 0.75) if args.block == "auto" else None
        comp = PatternCompressor(graph, calib, blocks, progress=lambda m: print(f"  {m}", file=sys.stderr))
        if args.policy == "learned":
            from edged.adapt.compress import CompressResult, LayerPlan
            from edged.adapt.policy import train_policy
            if args.kl_budget is None:
                raise ValueError("the learned policy takes a --kl-budget")
            learned = train_policy(comp, args.kl_budget, time_budget_s=args.time_budget_s)
            print(f"  policy: {learned.candidates} candidates measured in {learned.seconds:.1f} s")
            graph_out = comp.candidate(learned.levels)
            plans = [LayerPlan(i, comp.block_shapes[i], v) for i, v in learned.levels.items()]
            result = CompressResult(graph_out, plans, learned.kl, learned.sparsity, [])
        else:
            result = comp.search(kl_budget=args.kl_budget, sparsity=args.sparsity)
    except ValueError as exc:
        raise EdgedError(str(exc)) from exc
    for p in result.layers:
        op = graph.operators[p.op_index]
        action = comp.action(p.op_index, p.sparsity)
        described = {"channels": f"{action.ratio:.0%} of its output channels removed",
                "kernel3x3": "3x3 kernel patterns (4 of 9 taps)",
                "blocks": f"{action.ratio:.0%} of its {p.block} blocks pruned"}
        what = described.get(action.family, "kept as is")
        print(f"  op #{p.op_index} {op.opcode:<16} {what}")
    return _write_compressed(args, graph, comp, result, t0, patterns=True)


def _write_compressed(args, graph, comp, result, t0: float, factor_forms: bool = False,
                      patterns: bool = False) -> int:
    from edged.adapt.compress import float_bytes, served_bytes
    from edged.model.tflite import write_tflite

    stored = _store_weights(args, result.graph)
    content = write_tflite(result.graph)
    with open(args.output, "wb") as f:
        f.write(content)
    print(f"wrote {args.output}: {len(content)} bytes ({args.strategy}, {time.perf_counter() - t0:.1f} s)")
    for p in result.layers if not patterns else []:
        op = graph.operators[p.op_index]
        shape = "x".join(str(d) for d in graph.tensors[op.inputs[1]].shape)
        if factor_forms:
            form = comp.form(p.op_index, p.sparsity) if p.sparsity > 0 else None
            what = (f"tolerance {p.sparsity:g}: {form.counts()} leaves, {form.nbytes} bytes as int8 factors"
                    if form else "kept as is")
            print(f"  op #{p.op_index} {op.opcode:<16} {shape:>12}  {what}")
            continue
        print(f"  op #{p.op_index} {op.opcode:<16} {shape:>12}  {p.block} blocks  {p.sparsity:6.1%} pruned")
    ratio_before = float_bytes(graph) / served_bytes(graph)
    ratio_after = float_bytes(graph) / served_bytes(result.graph)
    if factor_forms:
        print(f"low-rank factors would save {result.sparsity:.1%} of the weight bytes; "
              f"output KL {result.kl:.5f} vs the input model (as exported)")
    else:
        print(f"sparsity {result.sparsity:.1%} of prunable weights; "
              f"output KL {result.kl:.5f} vs the input model")
    print(f"weights in memory vs float32: {ratio_before:.2f}x dense int8 -> {ratio_after:.2f}x as served "
          "(block-CSR)")
    _print_file_report(args, graph, stored, content, comp.calib.x)
    if comp.calib.y is not None:
        before, after = comp.accuracy(graph), comp.accuracy(result.graph)
        print(f"accuracy on the calibration labels: {before:.2%} -> {after:.2%}")
    return 0


def _auto_blocks(graph, layers, sparsity: float):
    """Per layer, the fastest block shape on this machine at ``sparsity``, else unstructured."""
    from edged.runtime.advice import fastest_blocks
    from edged.runtime.native import NativeEngine

    return fastest_blocks(NativeEngine(graph, layout="dense").plan, layers, sparsity)


def _store_weights(args, graph) -> list:
    """Choose how the pruned weights are stored (default: the smallest sparse layout each)."""
    from edged.sparse.storage import store_weights

    mode = "litert-kernel" if args.sparse_encoding else getattr(args, "storage", "sparse")
    try:
        return store_weights(graph, mode)
    except ValueError as exc:
        raise EdgedError(str(exc)) from exc


def _print_file_report(args, graph, stored: list, content: bytes, x) -> None:
    """The written file's bytes against the input file and a float32 model, and who runs it."""
    import os

    import numpy as np

    from edged.sparse.storage import check_litert, describe_storage

    for line in describe_storage(stored):
        print(line)
    source = os.path.getsize(args.model)
    # The same file with every int8 constant (weights) in float32 instead.
    fp32 = source + 3 * sum(t.nbytes for t in graph.tensors if t.is_constant and t.dtype == np.int8)
    print(f"file: {len(content)} bytes, {source / len(content):.2f}x smaller than the input file "
          f"({source} bytes), {fp32 / len(content):.2f}x smaller than the model in float32 "
          f"(about {fp32} bytes)")
    litert = check_litert(content, x)
    print("runs on: the native engine" + (
        f"; LiteRT's builtin kernels, without XNNPACK ({litert.detail})" if litert.runs
        else f"; not on LiteRT: {litert.detail}"))
