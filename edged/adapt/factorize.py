"""Low-rank strategies: each FULLY_CONNECTED weight matrix replaced by a factorized form.

``HMatrixCompressor`` uses DE-HM's error-bounded hierarchical matrices
(edged.adapt.hmatrix), ``SvdCompressor`` one truncated SVD of the whole
matrix, the baseline it is compared with. Both reuse the pruning
compressor's sensitivity allocation and KL-budget search (edged.adapt.compress)
with a tolerance per layer as the level.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from edged.adapt.calibration import Calibration, prunable_ops
from edged.adapt.compress import Compressor, MagnitudeStrategy
from edged.model.ir import Graph


class HMatrixCompressor(Compressor):
    """DE-HM: each FULLY_CONNECTED weight matrix replaced by its error-bounded H-matrix
    (edged.adapt.hmatrix) with tolerance eps. Candidates hold it re-densified to int8
    (``export="dense"``: every runtime runs it bit-exactly) or as edged's EDGED_HMATRIX op
    (``export="hmatrix"``: the factors themselves, native engine only). Levels are
    tolerances; "sparsity" is the fraction of weight bytes the factors save against dense int8."""

    grid = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8)
    EXPORTS = ("dense", "hmatrix")

    def __init__(self, master: Graph, calib: Calibration, layers: list[int] | None = None,
                 min_block: int = 32, progress: Callable[[str], None] | None = None,
                 export: str = "dense") -> None:
        if export not in self.EXPORTS:
            raise ValueError(f"unknown H-matrix export {export!r}: {', '.join(self.EXPORTS)}")
        self.min_block = min_block
        self.export = export
        fcs = [i for i in prunable_ops(master) if master.operators[i].opcode == "FULLY_CONNECTED"]
        super().__init__(master, calib, MagnitudeStrategy(), layers=layers or fcs, progress=progress)

    def _prepare(self) -> None:
        from edged.adapt.requantize import float_weights

        for i in self.layers:
            if self.master.operators[i].opcode != "FULLY_CONNECTED":
                raise ValueError(f"op #{i} is {self.master.operators[i].opcode}; DE-HM takes FULLY_CONNECTED")
        self._float = {i: float_weights(self.master, i) for i in self.layers}
        self._forms: dict[tuple[int, float], Any] = {}
        self._builders: dict[int, Any] = {}
        if self.export == "hmatrix":
            from edged.adapt.calibration import layer_inputs

            self._inputs = layer_inputs(self.master, self.calib.x)

    def form(self, i: int, eps: float):
        from edged.adapt.hmatrix import HMatrixBuilder

        key = (i, eps)
        if key not in self._forms:
            if i not in self._builders:  # one per layer: its block spectra serve every tolerance
                self._builders[i] = HMatrixBuilder(self._float[i], self.min_block, reorder=True)
            self._forms[key] = self._builders[i].build(eps)
        return self._forms[key]

    def candidate(self, levels: dict[int, float]) -> Graph:
        from edged.adapt.requantize import set_float_weights

        if self.export == "hmatrix":
            from edged.adapt.hmatrix_op import to_hmatrix_ops

            forms = {i: self.form(i, eps) for i, eps in levels.items() if eps > 0}
            return to_hmatrix_ops(self.master, None, forms, inputs=self._inputs)[0]
        g = copy.deepcopy(self.master)
        for i, eps in levels.items():
            if eps > 0:
                set_float_weights(g, i, self.form(i, eps).to_float())
        return g

    def overall_sparsity(self, levels: dict[int, float]) -> float:
        dense = {i: self._float[i].size for i in self.layers}  # int8 bytes
        saved = sum(dense[i] - min(dense[i], self.form(i, levels[i]).nbytes)
                    for i in self.layers if levels.get(i, 0) > 0)
        return saved / sum(dense.values())


class SvdCompressor(HMatrixCompressor):
    """The baseline: each layer's whole matrix at one truncated-SVD rank. Levels are the relative
    Frobenius error allowed, as for DE-HM, so the two compare at equal tolerance or equal bytes."""

    def form(self, i: int, eps: float):
        from edged.adapt.hmatrix import truncated_svd, truncation_rank

        key = (i, eps)
        if key not in self._forms:
            s = np.linalg.svd(self._float[i], compute_uv=False)
            self._forms[key] = truncated_svd(self._float[i], truncation_rank(s, eps))
        return self._forms[key]
