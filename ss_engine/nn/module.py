"""Module, Parameter and the step hooks: explicit forward/backward on SharedTensors.

A layer's ``forward(x)`` and ``backward(dy, need_input_grad)`` state secure operations
(``ss_engine.tensor.ops``) with ``yield from``; they know nothing of rounds, openings or
truncations, which the values' scales and the scheduler decide.  A purely local layer may
use plain functions instead of coroutines.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from ..party import PartyContext
from ..protocols.rounds import StepPlan
from ..tensor import SharedTensor

__all__ = ["Parameter", "Module", "StepHooks", "NO_HOOKS"]


@dataclass
class Parameter:
    """One party's share of a weight tensor (f fractional bits) and its training state."""

    name: str
    value: np.ndarray
    grad: SharedTensor | None = None        # batch-summed gradient, at its own scale
    velocity: np.ndarray | None = None      # optimizer state: SGD's lr-scaled momentum, Adam's m
    moment2: np.ndarray | None = None       # Adam's second moment v
    _tensor: SharedTensor | None = field(default=None, repr=False)

    def tensor(self, ctx: PartyContext) -> SharedTensor:
        """The value as a SharedTensor: one object until the value changes, so its masked
        opening serves every product it takes part in (forward and dY W)."""
        t = self._tensor
        if t is None or t.share is not self.value or t.ctx is not ctx:
            t = self._tensor = SharedTensor(ctx, self.value)
        return t

    def __bool__(self):
        return True  # a container, not a secret


class Module:
    """A layer: ``forward(x)`` caches what ``backward(dy)`` needs."""

    def parameters(self) -> list[Parameter]:
        return []

    def forward(self, x: SharedTensor):
        raise NotImplementedError

    def backward(self, dy: SharedTensor, need_input_grad: bool = True):
        """dL/dx from dL/dy (at whatever scale dy has); sets each parameter's ``grad``."""
        raise NotImplementedError


class StepHooks:
    """Where a benchmark looks into the one training step; they observe, never change it.

    ``phase(name)`` wraps each part of the step (forward, loss, backward, update) and
    ``layer(stage, index, layer, value)`` each layer's forward or backward (``value``: its
    input, or the gradient arriving at it); both return context managers.  ``step_plan``
    asks for the step's plan to be recorded.
    """

    def phase(self, name: str):
        return nullcontext()

    def layer(self, stage: str, index: int, layer: Module, value: SharedTensor):
        return nullcontext()

    def step_plan(self, step: int) -> StepPlan | None:
        """A ``protocols.rounds.StepPlan`` to record step ``step`` into, or None."""
        return None


NO_HOOKS = StepHooks()
