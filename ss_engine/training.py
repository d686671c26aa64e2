"""The SPMD training and inference loops both parties run (local runtime and servers alike).

What a party sees: its shares of images, labels and weights, the masked openings of the
protocols (uniformly random), the public job (model, hyper-parameters, batch order) and
nothing else.  The loss is never opened to a party: with ``loss_every`` each party hands
its share of p_y (the predicted probability of the true label) to the trainer, who alone
reconstructs it.

A step is one coroutine (``train_step``) run to completion on the party's scheduler
(``protocols.rounds``), which merges the rounds of its concurrent tasks (the parameters'
updates, the loss report).  Each step is a run keyed by its public shape (``step_key``:
the batch's rows, whether it reports the loss, the optimizer's part: Adam's step count),
so the first step of each shape records its material plan and every later one replays it;
the loop tells the source the next steps' keys, so the dealer prepares them ahead.
``StepHooks`` let a benchmark time its phases and layers and record its plan (every
round's layout and every material item) without a copy of the step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .description import ModelDescription, describe
from .nn.layers import Sequential
from .nn.loss import MSELoss, SoftmaxCrossEntropy
from .job import JobError, TrainJob, batch_order, steps_per_epoch
from .nn.models import build_model, param_names
from .nn.module import NO_HOOKS, StepHooks
from .nn.optim import SGD, Adam
from .party import PartyContext
from .protocols.rounds import join, resolve, run
from .tensor import SharedTensor, ops

__all__ = ["PartyState", "train_party", "train_step", "predict_party", "moment2_key", "step_key",
           "LOOKAHEAD"]

#: steps ahead whose keys a party announces (the dealer uses up to its window of them)
LOOKAHEAD = 4


def step_key(rows: int, report: bool, optimizer: tuple = ()) -> tuple:
    """A training step's plan key: what its schedule depends on, all public (``optimizer``:
    the optimizer's part, ``schedule_key``)."""
    return ("train", int(rows), bool(report)) + tuple(optimizer)


@dataclass
class PartyState:
    """Everything a party must keep to resume: its shares and counters (checkpointed)."""

    params: dict[str, np.ndarray]
    #: the optimizer's per-parameter state: SGD's momentum, or Adam's m, under the
    #: parameter's name; Adam's v under ``moment2_key(name)``
    velocity: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0
    prev_lr: float = 0.0
    source_seq: int = 0


def moment2_key(name: str) -> str:
    """Where a parameter's second moment (Adam's v) is kept in ``PartyState.velocity``."""
    return f"{name}/v"


class _BatchBuffers:
    """A step's batch of shares gathered into one of two buffers per array and batch size,
    alternating by step (a step's batch is only read during the step): no fresh copy of the
    data set's rows per step."""

    def __init__(self) -> None:
        self._bufs: dict = {}

    def take(self, data: np.ndarray, idx: np.ndarray, step: int) -> np.ndarray:
        shape = (len(idx),) + data.shape[1:]
        pair = self._bufs.get((id(data), shape))
        if pair is None:
            pair = self._bufs[(id(data), shape)] = [np.empty(shape, data.dtype) for _ in range(2)]
        return np.take(data, idx, axis=0, out=pair[step % 2], mode="clip")  # ("raise" buffers)


def _inputs(model: ModelDescription, xb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(xb.reshape((xb.shape[0],) + model.input_shape))


def _model_from_state(job: TrainJob, state: PartyState) -> tuple[Sequential, SGD | Adam]:
    missing = set(param_names(job.model)) - set(state.params)
    if missing:
        raise JobError(f"missing parameter shares {sorted(missing)}")
    model = build_model(job.model, state.params)
    params = model.parameters()
    for p in params:
        p.velocity = state.velocity.get(p.name)
        p.moment2 = state.velocity.get(moment2_key(p.name))
    if job.optimizer == "adam":
        return model, Adam(params, job.lr, (job.beta1, job.beta2), job.eps, job.weight_decay,
                           step=state.step)
    opt = SGD(params, job.lr, job.momentum, job.weight_decay)
    opt._prev_lr = state.prev_lr or None
    return model, opt


def _optimizer_state(model: Sequential) -> dict[str, np.ndarray]:
    out = {p.name: p.velocity for p in model.parameters() if p.velocity is not None}
    out.update({moment2_key(p.name): p.moment2 for p in model.parameters() if p.moment2 is not None})
    return out


def train_step(model: Sequential, loss, opt: SGD | Adam, x: SharedTensor, y: SharedTensor, lr: float,
               report: bool = False, hooks: StepHooks = NO_HOOKS):
    """One training step, a coroutine: forward, the loss gradient, backward with every
    parameter's update started as soon as its gradient exists, then the end of the updates.
    With ``report``, returns the shares of the loss's report (p_y for classification, the
    squared error for regression), computed concurrently with backward; else None."""
    opt.begin_step(x.shape[0], lr)
    with hooks.phase("forward"):
        logits = yield from model.forward(x, hooks)
    with hooks.phase("loss"):
        grad, py = yield from resolve(loss.gradient(logits, y, report))
    with hooks.phase("backward"):
        yield from model.backward(grad, on_grad=opt.spawn_update, hooks=hooks)
    with hooks.phase("update"):
        yield from opt.finish()
        if py is not None:
            py = yield from join(py)
    return py


def train_party(ctx: PartyContext, x_share: np.ndarray, y_share: np.ndarray, job: TrainJob,
                state: PartyState, on_step: Callable | None = None,
                stop_at_step: int | None = None, hooks: StepHooks | None = None) -> PartyState:
    """Train on shares; ``on_step(step, epoch, state, p_y_share | None)`` after every step.

    Resumes from ``state.step`` (the source's sequence number must match ``state.source_seq``).
    ``hooks`` (benchmarks) observe each step (``StepHooks``).
    """
    hooks = hooks or NO_HOOKS
    n, k = x_share.shape[0], job.model.num_outputs
    if y_share.shape != (n, k):
        what = "one-hot label" if job.task == "classification" else "target"
        raise JobError(f"{what} shares must have shape ({n}, {k}), got {y_share.shape}")
    model, opt = _model_from_state(job, state)
    loss = SoftmaxCrossEntropy() if job.task == "classification" else MSELoss()
    spe = steps_per_epoch(n, job.batch_size)
    total = job.epochs * spe if stop_at_step is None else min(stop_at_step, job.epochs * spe)
    order, order_epoch = None, -1
    batches = _BatchBuffers()

    def key(s: int) -> tuple:
        rows = min(job.batch_size, n - (s % spe) * job.batch_size)
        return step_key(rows, bool(job.loss_every) and (s + 1) % job.loss_every == 0, opt.schedule_key(s))

    for step in range(state.step, total):
        epoch, i = divmod(step, spe)
        if epoch != order_epoch:
            order, order_epoch = batch_order(n, job.shuffle_seed, epoch), epoch
        idx = order[i * job.batch_size:(i + 1) * job.batch_size]
        x = SharedTensor(ctx, _inputs(job.model, batches.take(x_share, idx, step)))
        y = SharedTensor(ctx, batches.take(y_share, idx, step))
        k = key(step)
        lr = job.lr_at(epoch)
        ctx.source.expect([key(s) for s in range(step + 1, min(total, step + 1 + LOOKAHEAD))])
        py = run(ctx, train_step(model, loss, opt, x, y, lr, k[2], hooks), hooks.step_plan(step), key=k)
        state.params = {p.name: p.value for p in model.parameters()}
        state.velocity = _optimizer_state(model)
        state.step, state.prev_lr = step + 1, lr
        state.source_seq = getattr(ctx.source, "next_seq", 0)
        if on_step is not None:
            on_step(step, epoch, state, None if py is None else py.share)
    return state


def _predict_batch(model: Sequential, x: SharedTensor, task: str):
    out = yield from model.forward(x)
    if task == "classification":
        return (yield from ops.argmax(out))
    return (yield from ops.truncate(out))


def predict_party(ctx: PartyContext, model: ModelDescription | str, params: dict[str, np.ndarray],
                  x_share: np.ndarray, batch_size: int = 1000,
                  task: str = "classification") -> np.ndarray:
    """Secure inference: integer one-hot shares of the predicted class for each shared input
    (classification), or shares of the outputs with f fractional bits (regression)."""
    desc = describe(model)
    net = build_model(desc, params)
    out = []
    for s in range(0, x_share.shape[0], batch_size):
        x = SharedTensor(ctx, _inputs(desc, x_share[s:s + batch_size]))
        # the first batch opens the weights, the later ones reuse those openings
        key = ("predict", task, x.shape[0], s == 0)
        out.append(run(ctx, _predict_batch(net, x, task), key=key).share)
    return np.concatenate(out) if out else np.zeros((0, desc.num_outputs), np.int64)
