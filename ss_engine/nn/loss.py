"""Softmax cross-entropy (and MSE) on shares: only the gradient is computed securely."""
from __future__ import annotations

from ..protocols.rounds import spawn
from ..tensor import SharedTensor, ops

__all__ = ["SoftmaxCrossEntropy", "MSELoss"]


def _prob_of_label(p: SharedTensor, onehot: SharedTensor):
    """Per-sample p_y = sum_j p_j y_j: p is a truncation result (a linear form), so only the
    labels are opened; the row sums are truncated once.  Rounds: 2."""
    py = yield from ops.mul(p, onehot)
    return (yield from ops.truncate(py.sum(axis=1)))


class SoftmaxCrossEntropy:
    """Gradient of the summed loss w.r.t. logits: softmax(z) - onehot(y).

    The mean over the batch (1/B) is folded into the optimizer's learning rate.  With
    ``want_prob_of_label`` the per-sample p_y is computed too, as shares in a concurrent
    task whose rounds ride along with backward (the second result is its handle: ``join``
    it), for the trainer to reconstruct -mean(log p_y) (the loss); nothing else is opened.
    """

    def gradient(self, logits: SharedTensor, onehot: SharedTensor, want_prob_of_label: bool = False):
        p = yield from ops.softmax(logits)
        py = (yield from spawn(_prob_of_label(p, onehot))) if want_prob_of_label else None
        return p - onehot, py


def _squared_error(grad: SharedTensor):
    """Per-sample ||z - y||^2: grad (above f) is truncated once, a truncation result squares
    with no opening, the row sums are truncated once.  Rounds: 2."""
    sq = yield from ops.mul(grad, grad)
    return (yield from ops.truncate(sq.sum(axis=1)))


class MSELoss:
    """Gradient of the summed 1/2 ||z - y||^2: z - y (at z's scale; no protocol).

    The mean over the batch (1/B) is folded into the optimizer's learning rate.  With
    ``want_loss`` the per-sample squared error ||z - y||^2 is computed too, as shares in a
    concurrent task (the second result is its handle), for the trainer to reconstruct.
    """

    def gradient(self, out: SharedTensor, target: SharedTensor, want_loss: bool = False):
        grad = out - target
        sq = (yield from spawn(_squared_error(grad))) if want_loss else None
        return grad, sq
