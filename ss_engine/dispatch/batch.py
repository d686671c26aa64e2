"""A batch of session ops: parsed and checked in full, then run by each party as SPMD code.

A batch is what a session's front-end sends both parties at once (both sessions use the
same message; the remote one carries it in a ``session_ops`` request)::

    {"seq": k, "ops": [[name, out, [in, ...], {params}], ...], "reveal": [id, ...],
     "free": [id, ...]}            + payload arrays (int64): shares and public operands

Handle ids are positive integers the front-end allocates; ``out`` must be new, every
``in`` an id the party holds or an earlier op of the batch made.  After the ops, each
party hands its shares of ``reveal`` to the caller (nothing is opened between the parties)
and forgets ``free``.  A batch is all or nothing: its results join the registry only when
every op has run.

``run_batch`` starts every op as a concurrent task that first joins the tasks making its
inputs, so independent ops share rounds (the scheduler sends all pending requests of all
tasks in one message per round) and a chain costs what its ops cost one after another.
Tasks start in op order and the scheduler never looks at a value, so both parties issue
the same requests and fetch the same material in the same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..party import PartyContext
from ..protocols.rounds import join, resolve, spawn
from ..tensor import SharedTensor
from .table import MAX_DIM, MAX_INPUTS, MAX_RANK, OPS, Env, OpError

__all__ = ["SessionLimits", "ParsedOp", "Batch", "PartySession", "check_op", "parse_batch",
           "run_batch", "MAX_HANDLE_ID"]

MAX_HANDLE_ID = 1 << 53


@dataclass(frozen=True)
class SessionLimits:
    """What one session may hold and ask (each party refuses a batch beyond them)."""

    max_ops: int = 512                       # ops in one batch
    max_value_elements: int = 1 << 22        # elements of one value (32 MiB of shares)
    max_live_elements: int = 1 << 25         # elements of all values held (256 MiB)
    max_handles: int = 1 << 16               # values held at once
    max_macs: int = 1 << 34                  # multiply-accumulates of one matmul or conv2d


@dataclass(frozen=True)
class ParsedOp:
    name: str
    out: int
    inputs: tuple
    params: dict
    shape: tuple


@dataclass(frozen=True)
class Batch:
    seq: int
    ops: tuple
    reveal: tuple
    free: tuple
    public_arrays: tuple      # payload indices both parties hold equal (public operands)


def _handle_id(v, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_HANDLE_ID:
        raise OpError(f"{what} must be a handle id in [1, {MAX_HANDLE_ID}], got {str(v)[:30]}")
    return v


def check_op(name, params, shapes: list, env: Env, limits: SessionLimits) -> tuple[dict, tuple]:
    """(normalised params, output shape) of one op on inputs of ``shapes``; OpError if the
    op is unknown, its parameters or inputs are invalid, or its result is too large."""
    op = OPS.get(name) if isinstance(name, str) else None
    if op is None:
        raise OpError(f"unknown op {str(name)[:40]!r}")
    n = len(shapes)
    if (op.arity is None and not 1 <= n <= MAX_INPUTS) or (op.arity is not None and n != op.arity):
        want = f"1 to {MAX_INPUTS}" if op.arity is None else str(op.arity)
        raise OpError(f"{name} takes {want} secret inputs, got {n}")
    if not isinstance(params, dict) or len(params) > 8:
        raise OpError(f"{name}: params must be a map of at most 8 entries")
    params, shape = op.check(params, [tuple(s) for s in shapes], env)
    if len(shape) > MAX_RANK or any(d < 1 or d > MAX_DIM for d in shape):
        raise OpError(f"{name}: result shape {shape} (at most {MAX_RANK} dimensions, none empty)")
    if math.prod(shape) > limits.max_value_elements:
        raise OpError(f"{name}: result of {math.prod(shape)} elements exceeds the session's "
                      f"{limits.max_value_elements} per value")
    return params, tuple(shape)


def _id_list(h: dict, key: str, limit: int) -> tuple:
    v = h.get(key, [])
    if not isinstance(v, list) or len(v) > limit:
        raise OpError(f"{key} must be a list of at most {limit} handle ids")
    ids = tuple(_handle_id(i, f"{key} entry") for i in v)
    if len(set(ids)) != len(ids):
        raise OpError(f"{key} names a handle twice")
    return ids


def parse_batch(h: dict, arrays: list, shapes: dict, frac_bits: int, limits: SessionLimits,
                expect_seq: int) -> Batch:
    """Check a batch against the values held (``shapes``: id -> shape) without changing
    anything; OpError (one line) on the first problem."""
    seq = h.get("seq")
    if seq != expect_seq or isinstance(seq, bool):
        raise OpError(f"batch {str(seq)[:20]} out of order (expected {expect_seq})")
    raw_ops = h.get("ops")
    if not isinstance(raw_ops, list) or len(raw_ops) > limits.max_ops:
        raise OpError(f"ops must be a list of at most {limits.max_ops} ops")
    env = Env(list(arrays), frac_bits, limits.max_macs)
    known = dict(shapes)
    used_arrays: dict[int, str] = {}
    parsed = []
    for i, raw in enumerate(raw_ops):
        if not isinstance(raw, list) or len(raw) != 4 or not isinstance(raw[2], list):
            raise OpError(f"op {i}: an op is [name, out, [inputs], {{params}}]")
        name, out, ins, params = raw
        try:
            out = _handle_id(out, "out")
            if out in known:
                raise OpError(f"handle {out} exists already")
            if len(ins) > MAX_INPUTS:
                raise OpError(f"at most {MAX_INPUTS} inputs")
            ins = tuple(_handle_id(x, "input") for x in ins)
            missing = [x for x in ins if x not in known]
            if missing:
                raise OpError(f"unknown handle {missing[0]}")
            params, shape = check_op(name, params, [known[x] for x in ins], env, limits)
        except OpError as exc:
            raise OpError(f"op {i} ({str(name)[:20]}): {exc}") from None
        if "a" in params:
            role = "share" if name == "share" else "public"
            if params["a"] in used_arrays:
                raise OpError(f"op {i} ({name}): payload array {params['a']} is used twice")
            used_arrays[params["a"]] = role
        known[out] = shape
        parsed.append(ParsedOp(name, out, ins, params, shape))
    if len(used_arrays) != len(arrays):
        raise OpError(f"{len(arrays) - len(used_arrays)} payload arrays are not used by any op")
    reveal = _id_list(h, "reveal", limits.max_handles)
    free = _id_list(h, "free", limits.max_handles)
    for what, ids in (("reveal", reveal), ("free", free)):
        missing = [x for x in ids if x not in known]
        if missing:
            raise OpError(f"{what}: unknown handle {missing[0]}")
    held = {k: v for k, v in known.items() if k not in free}
    if len(held) > limits.max_handles:
        raise OpError(f"the session would hold {len(held)} values (at most {limits.max_handles})")
    live = sum(math.prod(s) for s in held.values())
    if live > limits.max_live_elements:
        raise OpError(f"the session would hold {live} elements (at most {limits.max_live_elements}); "
                      f"free values you no longer need")
    public = tuple(sorted(i for i, role in used_arrays.items() if role == "public"))
    return Batch(seq, tuple(parsed), reveal, free, public)


def _op_task(ctx: PartyContext, registry: dict, op: ParsedOp, deps: list, arrays: list):
    xs = []
    for x, dep in zip(op.inputs, deps):
        xs.append((yield from join(dep)) if dep is not None else registry[x])
    value = yield from resolve(OPS[op.name].run(ctx, xs, op.params, arrays))
    if not isinstance(value, SharedTensor) or value.shape != op.shape:
        raise RuntimeError(f"op {op.name} made {getattr(value, 'shape', value)!r}, "
                           f"its check promised {op.shape}")
    return value


def run_batch(ctx: PartyContext, registry: dict, batch: Batch, arrays: list):
    """Run a parsed batch (a coroutine); returns this party's (share, frac_bits) of every
    revealed value, in ``batch.reveal`` order.  ``registry`` (id -> SharedTensor) gains the
    batch's results and loses its frees only if every op ran."""
    tasks: dict[int, object] = {}
    for op in batch.ops:
        deps = [tasks.get(x) for x in op.inputs]
        tasks[op.out] = yield from spawn(_op_task(ctx, registry, op, deps, arrays))
    made = {}
    for out, task in tasks.items():
        made[out] = yield from join(task)
    registry.update(made)
    shown = [(np.array(registry[x].share, dtype=np.int64), registry[x].frac_bits)
             for x in batch.reveal]
    for x in batch.free:
        del registry[x]
    return shown


class PartySession:
    """One party's side of a session: the values it holds and the next batch it expects.

    Every batch received consumes its sequence number, refused or not, so the front-end
    and both parties stay in step."""

    def __init__(self, ctx: PartyContext, limits: SessionLimits):
        self.ctx, self.limits = ctx, limits
        self.values: dict[int, SharedTensor] = {}
        self.next_seq = 0

    def parse(self, h: dict, arrays: list) -> Batch:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        if not isinstance(h, dict):
            raise OpError("a batch is a map")
        shapes = {k: v.shape for k, v in self.values.items()}
        return parse_batch(h, arrays, shapes, self.ctx.frac_bits, self.limits, seq)

    def run(self, batch: Batch, arrays: list):
        """``run_batch`` on this party's values (a coroutine)."""
        return run_batch(self.ctx, self.values, batch, arrays)

    def clear(self) -> None:
        """Forget every value, overwriting the shares held in memory first."""
        for v in self.values.values():
            for a in (v._share, getattr(v.truncated, "_share", None)):
                if isinstance(a, np.ndarray) and a.flags.writeable:
                    a.fill(0)
        self.values.clear()
