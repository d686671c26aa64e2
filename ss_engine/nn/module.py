"""Module and Parameter: explicit forward/backward on SharedTensors (no autograd tape)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..protocols.beaver import MaskedOperand
from ..tensor import SharedTensor

__all__ = ["Parameter", "Module", "ForwardState", "BackwardState"]


@dataclass
class Parameter:
    """One party's share of a weight tensor (f fractional bits) and its training state."""

    name: str
    value: np.ndarray
    grad: np.ndarray | None = None          # share of the batch-summed gradient
    grad_bits: int | None = None            # its fractional bits (None: f; 2f if untruncated)
    velocity: np.ndarray | None = None      # optimizer state: lr-scaled momentum buffer
    opened: MaskedOperand | None = field(default=None, repr=False)  # this step's mask

    def __bool__(self):
        return True  # a container, not a secret


class ForwardState:
    """Secrets waiting to be masked and opened at the next opening of the forward pass.

    A ReLU's bit or a max-pool's one-hot is needed only in backward; opening its masked
    value together with the next layer's input costs bytes but no extra round.
    """

    def __init__(self, training: bool = True) -> None:
        self.training = training
        self.pending: list[tuple[np.ndarray, object]] = []

    def defer(self, share: np.ndarray, owner) -> None:
        if self.training:  # inference never runs backward: nothing to open
            self.pending.append((share, owner))

    def take(self) -> list[tuple[np.ndarray, object]]:
        items, self.pending = self.pending, []
        return items


class BackwardState:
    """Truncations waiting for the next truncation round of the backward pass.

    A weight gradient is needed only by the optimizer, so its truncation rides along with
    the next layer's (fused) truncation instead of costing a round of its own; with
    ``raw_weight_grads`` (an optimizer that folds the truncation into its own) it is not
    truncated at all.
    """

    def __init__(self, raw_weight_grads: bool = False) -> None:
        self.raw_weight_grads = bool(raw_weight_grads)
        self.pending: list[tuple[np.ndarray, object]] = []

    def defer_trunc(self, raw: np.ndarray, setter) -> None:
        self.pending.append((raw, setter))

    def take(self) -> list[tuple[np.ndarray, object]]:
        items, self.pending = self.pending, []
        return items


class Module:
    """A layer: ``forward(x, state)`` caches what ``backward(dy)`` needs."""

    def parameters(self) -> list[Parameter]:
        return []

    def weights_to_open(self) -> list[Parameter]:
        """Parameters whose masked value the step opens up front in one batch."""
        return []

    def forward(self, x: SharedTensor, state: ForwardState) -> SharedTensor:
        raise NotImplementedError

    def backward(self, dy: SharedTensor, need_input_grad: bool = True,
                 state: BackwardState | None = None) -> SharedTensor | None:
        """dL/dx from dL/dy.  ``dy`` may be untruncated (frac_bits = 2f) when the layer
        above left its truncation to this one (see ``Sequential``)."""
        raise NotImplementedError

    def receive_opened(self, op: MaskedOperand) -> None:
        """Called with the opened mask of a secret this module deferred."""
        raise NotImplementedError
