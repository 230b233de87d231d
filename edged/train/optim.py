"""Optimizers over a dict of named parameters, with pruning masks held fixed.

A masked parameter is multiplied by its mask after every update, so a pruned
weight stays exactly zero whatever its gradient (and its optimizer state
never leaks into it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sgd:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    _velocity: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             masks: dict[str, np.ndarray] | None = None) -> None:
        for name, g in grads.items():
            p = params[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            v = self._velocity.setdefault(name, np.zeros_like(p))
            v *= self.momentum
            v += g
            p -= self.lr * v
            _apply_mask(p, masks, name)


@dataclass
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    _m: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _v: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _t: int = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             masks: dict[str, np.ndarray] | None = None) -> None:
        self._t += 1
        correction1 = 1.0 - self.beta1**self._t
        correction2 = 1.0 - self.beta2**self._t
        for name, g in grads.items():
            p = params[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = self._m.setdefault(name, np.zeros_like(p))
            v = self._v.setdefault(name, np.zeros_like(p))
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            p -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)
            _apply_mask(p, masks, name)

    def state_bytes(self, params: dict[str, np.ndarray]) -> int:
        """Bytes of the moments this optimizer keeps for ``params``."""
        return 2 * sum(p.nbytes for p in params.values())


def _apply_mask(p: np.ndarray, masks: dict[str, np.ndarray] | None, name: str) -> None:
    if masks is not None and name in masks:
        p *= masks[name]
