"""Softmax cross-entropy (and MSE) on shares: only the gradient is computed securely."""
from __future__ import annotations

import numpy as np

from ..protocols.beaver import mask_and_open, mul_masked, square_s
from ..protocols.nonlinear import softmax_s
from ..protocols.truncation import trunc_s
from ..tensor import SharedTensor

__all__ = ["SoftmaxCrossEntropy", "MSELoss"]


class SoftmaxCrossEntropy:
    """Gradient of the summed loss w.r.t. logits: softmax(z) - onehot(y).

    The mean over the batch (1/B) is folded into the optimizer's learning rate.  With
    ``want_prob_of_label`` the per-sample p_y is also returned as shares, for the trainer
    to reconstruct -mean(log p_y) (the loss), and nothing else is opened.
    """

    def gradient(self, logits: SharedTensor, onehot: SharedTensor, want_prob_of_label: bool = False):
        ctx = logits.ctx
        p = softmax_s(ctx, logits.share)
        grad = SharedTensor(ctx, p - onehot.share)
        if not want_prob_of_label:
            return grad, None
        p_op, y_op = mask_and_open(ctx, [p, onehot.share], "loss_open")
        py = trunc_s(ctx, mul_masked(ctx, p_op, y_op), ctx.frac_bits).sum(axis=1)
        return grad, SharedTensor(ctx, np.asarray(py, np.int64))


class MSELoss:
    """Gradient of the summed 1/2 ||z - y||^2: z - y (local, no round).

    The mean over the batch (1/B) is folded into the optimizer's learning rate.  With
    ``want_loss`` the per-sample squared error ||z - y||^2 is also returned as shares
    (``square_s``: 2 rounds), for the trainer to reconstruct.
    """

    def gradient(self, out: SharedTensor, target: SharedTensor, want_loss: bool = False):
        grad = out - target
        if not want_loss:
            return grad, None
        sq = square_s(out.ctx, grad.share).sum(axis=1)
        return grad, SharedTensor(out.ctx, np.asarray(sq, np.int64))
