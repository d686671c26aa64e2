"""Protocols as SPMD coroutines, and the per-party scheduler that merges their rounds.

A protocol is a generator function.  Each communication round is a ``yield`` of a typed
request, and the value sent back is what the round opened::

    e, f = yield from open_ring(ctx, [x - a, y - b], "beaver")

Requests: ``OpenRing`` (additive opening of int64 ring arrays), ``OpenWords`` (XOR opening of
bit-packed uint64 words), ``Reveal`` (open to one party only; the other gets None).  Dealer
material stays a synchronous call on ``ctx.source``: it never waits on the peer.
Sub-protocols compose with ``yield from``; ``spawn(coroutine)`` starts a concurrent task and
returns its handle at once, ``join(handle)`` waits for its result, ``gather(*coroutines)``
does both for several.

The scheduler (``Scheduler.run``, one per party and step) advances every runnable task until
it blocks on a request or finishes, then sends *all* pending requests of all tasks in ONE
channel message per direction, and hands each task its part of the reply.  Independent work
therefore shares rounds automatically: a request goes out in the first round after the data
it depends on exists (as soon as possible, i.e. merged by dependency depth, what MP-SPDZ's
compiler merger and SPU's vectoriser do), and no protocol or layer names rounds or defers
openings by hand.  Tasks run in a fixed order (spawn order, then request order), and
nothing in the scheduler looks at a value, so both parties issue the same requests and fetch
the same material in the same order (their item addresses agree) and no branch depends on
a secret.

A run may name its *key*: a public description of its shape (a training step's batch rows
and whether it reports the loss).  The party's material source then records the first run
of a key and replays the later ones (``preprocessing.source``): one keystream fill per
run, one dealer blob, no per-item work beyond a check against the plan.

The *plan* of a run as observed (``StepPlan``): every round's message layout (request kind,
label, target and the dtype and shape of every array) and every material item fetched,
with the number of items fetched before each round.  A training step's plan is the same
every step (``tests/test_schedule.py`` records two consecutive steps and compares them):
what the replay relies on.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import GeneratorType
from typing import Any, Generator, Sequence

import numpy as np

from ..party import PartyContext
from ..preprocessing.specs import relative_spec

__all__ = ["OpenRing", "OpenWords", "Reveal", "Spawn", "Join", "Task", "open_ring", "open_xor",
           "reveal_to", "spawn", "join", "gather", "resolve", "Scheduler", "run", "StepPlan",
           "RoundLayout"]

Coroutine = Generator[Any, Any, Any]


class _Request:
    """A communication request: what this party sends and how the reply is combined.
    ``to`` is None when both parties send, else the one party that receives."""

    __slots__ = ("arrays", "label", "to")
    kind = ""

    def __init__(self, arrays: list[np.ndarray], label: str, to: int | None = None) -> None:
        self.arrays, self.label, self.to = arrays, label, to

    def combine(self, mine: list[np.ndarray], theirs: list[np.ndarray]):
        raise NotImplementedError

    def layout(self) -> tuple:
        return (self.kind, self.label, self.to, tuple((a.dtype.str, a.shape) for a in self.arrays))


class OpenRing(_Request):
    """Open int64 ring arrays: both parties send their shares; each gets the sums."""

    __slots__ = ()
    kind = "ring"

    def combine(self, mine, theirs):
        return [m + t for m, t in zip(mine, theirs)]


class OpenWords(_Request):
    """Open XOR-shared uint64 words: both parties send; each gets the XORs."""

    __slots__ = ()
    kind = "words"

    def combine(self, mine, theirs):
        return [m ^ t for m, t in zip(mine, theirs)]


class Reveal(OpenRing):
    """Open int64 arrays to party ``to`` only: the other party sends, ``to`` gets the sums,
    the other gets None."""

    __slots__ = ()
    kind = "reveal"


@dataclass(frozen=True)
class Spawn:
    """Start ``coroutine`` as a concurrent task; the yield returns its ``Task`` handle."""

    coroutine: Coroutine


@dataclass(frozen=True)
class Join:
    """Wait for a task; the yield returns its result."""

    task: "Task"


class Task:
    """A handle on a spawned coroutine (see ``join``)."""

    __slots__ = ("gen", "done", "result", "waiters")

    def __init__(self, gen: Coroutine) -> None:
        self.gen, self.done, self.result, self.waiters = gen, False, None, []

    def __bool__(self):
        raise TypeError("a task handle has no truth value; join it")


# -- what protocols write ---------------------------------------------------------------------
def open_ring(ctx: PartyContext, arrays: Sequence[np.ndarray], label: str = "open"):
    """Open int64 ring arrays in this round.  Rounds: 1 (shared with whatever else is
    pending).  Bytes sent per party: 8 per element."""
    arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in arrays]
    if not arrays:
        return []
    return (yield OpenRing(arrays, label))


def open_xor(ctx: PartyContext, words: Sequence[np.ndarray], label: str = "open_words"):
    """Open XOR-shared uint64 words in this round.  Bytes per party: 8 per word."""
    words = [np.ascontiguousarray(w, dtype=np.uint64) for w in words]
    if not words:
        return []
    return (yield OpenWords(words, label))


def reveal_to(ctx: PartyContext, arrays: Sequence[np.ndarray], to: int, label: str = "reveal"):
    """Open int64 arrays to party ``to`` only (one-way); the other party gets None."""
    if to not in (0, 1):
        raise ValueError("reveal target must be party 0 or 1")
    arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in arrays]
    return (yield Reveal(arrays, label, to))


def spawn(coroutine: Coroutine):
    """Start a concurrent task (no round); returns its handle."""
    return (yield Spawn(coroutine))


def join(task: Task):
    """Wait for ``task`` and return its result."""
    return (yield Join(task))


def gather(*coroutines: Coroutine):
    """Run several coroutines concurrently (their rounds merge); returns their results."""
    tasks = []
    for c in coroutines:
        tasks.append((yield Spawn(c)))
    results = []
    for t in tasks:
        results.append((yield Join(t)))
    return results


def resolve(value):
    """``yield from resolve(v)``: the result of v if it is a coroutine, else v itself (so a
    purely local layer or loss may be a plain function)."""
    if isinstance(value, GeneratorType):
        return (yield from value)
    return value


# -- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundLayout:
    """One round: every request's (kind, label, target, ((dtype, shape), ...)) in message
    order, and how many material items the party had fetched before it (this run's count)."""

    requests: tuple
    items_before: int


@dataclass
class StepPlan:
    """What one run (a training step) did, in order: its rounds and its material items."""

    rounds: list[RoundLayout] = field(default_factory=list)
    material: list[tuple] = field(default_factory=list)   # (Addr, MaterialSpec)

    def normalized(self) -> tuple:
        """The plan with addresses relative to the run, so plans of two steps compare equal
        exactly when they did the same thing."""
        if not self.material:
            return (tuple(self.rounds), ())
        nonce = self.material[0][0].nonce
        return (tuple(self.rounds),
                tuple(((a.r, a.c), relative_spec(spec, nonce)) for a, spec in self.material))

    @property
    def bytes_sent(self) -> dict[int, int]:
        """Bytes each party sends over the run, by rank, from the layouts alone."""
        out = {0: 0, 1: 0}
        for rnd in self.rounds:
            for _, _, to, arrays in rnd.requests:
                n = sum(int(np.dtype(dt).itemsize) * int(np.prod(shape, dtype=np.int64))
                        for dt, shape in arrays)
                for rank in (0, 1):
                    if rank != to:
                        out[rank] += n
        return out


# -- the scheduler ----------------------------------------------------------------------------
class Scheduler:
    """Runs coroutines for one party, one channel message per direction per round."""

    def __init__(self, ctx: PartyContext, plan: StepPlan | None = None, key=None) -> None:
        self.ctx, self.plan, self.key = ctx, plan, key

    def run(self, main: Coroutine):
        """Drive ``main`` and every task it spawns to completion, as one run of the source
        (keyed ``key``); return main's result."""
        plan, source = self.plan, self.ctx.source
        if plan is not None:
            source.record(plan.material)
        source.begin(self.key)
        ok = False
        try:
            result = self._run(main)
            ok = True
            return result
        finally:
            source.end(ok)
            if plan is not None:
                source.record(None)

    def _run(self, main: Coroutine):
        root = Task(main)
        tasks = [root]
        ready: deque = deque([(root, None)])
        waiting: list[Task] = []          # the tasks whose requests go out this round,
        requests: list[_Request] = []     # in the order they were made
        advance = self._advance
        while True:
            while ready:
                task, value = ready.popleft()
                advance(task, value, ready, waiting, requests, tasks)
            if not requests:
                break
            ready.extend(zip(waiting, self._round(requests)))
            waiting, requests = [], []
        stuck = [t for t in tasks if not t.done]
        if stuck:
            raise RuntimeError(f"{len(stuck)} task(s) wait on each other and can never finish")
        return root.result

    @staticmethod
    def _advance(task: Task, value, ready: deque, waiting: list, requests: list, tasks: list) -> None:
        send = task.gen.send
        while True:
            try:
                req = send(value)
            except StopIteration as stop:
                task.done, task.result = True, stop.value
                ready.extend((w, stop.value) for w in task.waiters)
                task.waiters = []
                return
            if isinstance(req, _Request):
                waiting.append(task)
                requests.append(req)
                return
            if isinstance(req, Spawn):
                child = Task(req.coroutine)
                tasks.append(child)
                ready.append((child, None))
                value = child
            elif isinstance(req, Join):
                if req.task.done:
                    value = req.task.result
                else:
                    req.task.waiters.append(task)
                    return
            else:
                raise TypeError(f"a protocol yielded {type(req).__name__}, not a round request")

    def _round(self, requests: list) -> list:
        rank = self.ctx.rank
        peer = 1 - rank
        if len(requests) == 1:
            req = requests[0]
            label, i_send, peer_sends = req.label, req.to != rank, req.to != peer
            out = req.arrays if i_send else []
        else:
            out, labels = [], []
            i_send = peer_sends = False
            for req in requests:
                if req.to != rank:
                    out += req.arrays
                    i_send = True
                if req.to != peer:
                    peer_sends = True
                if req.label not in labels:
                    labels.append(req.label)
            label = "+".join(labels)
        if self.plan is not None:
            self.plan.rounds.append(RoundLayout(tuple(req.layout() for req in requests),
                                                len(self.plan.material)))
        ch = self.ctx.channel
        if i_send and peer_sends:
            theirs = ch.exchange(out, label)
        elif i_send:
            ch.send_only(out, label)
            theirs = []
        else:
            theirs = ch.recv_only(label)
        replies, pos = [], 0
        for req in requests:
            mine = req.arrays
            if req.to == peer:  # a one-way reveal to the peer: nothing comes back
                replies.append(None)
                continue
            n = len(mine)
            got = theirs[pos:pos + n]
            pos += n
            if len(got) != n:
                raise ValueError("peer opened arrays of a different structure")
            for t, m in zip(got, mine):
                if t.shape != m.shape or t.dtype != m.dtype:
                    raise ValueError("peer opened arrays of a different structure")
            replies.append(req.combine(mine, got))
        if pos != len(theirs):
            raise ValueError("peer opened arrays of a different structure")
        return replies


def run(ctx: PartyContext, value, plan: StepPlan | None = None, key=None):
    """The result of ``value``: driven by a scheduler (one run of the party's source, keyed
    ``key``: see the module doc) if it is a coroutine, else itself."""
    if isinstance(value, GeneratorType):
        return Scheduler(ctx, plan, key).run(value)
    return value
