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
run, one dealer blob, no per-item work beyond a check against the plan.  The scheduler
records the run's rounds too (each request's kind, label, target, dtypes and shapes) and
replays them into reply buffers made once for the key: every round is checked against its
planned layout, and its openings are combined into two alternating sets of buffers instead
of fresh arrays; what it sends is computed into planned buffers too (``outgoing``: the
run's i-th outgoing array is the plan's i-th buffer).  Like its material, a replayed run's
opened values are read-only and stay valid until the run after the next one begins; a
value that must live longer belongs to an unkeyed run (a revealed value is always fresh).

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
           "reveal_to", "spawn", "join", "gather", "resolve", "outgoing", "Scheduler", "run",
           "StepPlan", "RoundLayout", "RoundPlan"]

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
    op = staticmethod(np.add)

    def combine(self, mine, theirs):
        op = self.op
        out = [op(m, t) for m, t in zip(mine, theirs)]
        for a in out:
            a.flags.writeable = False
        return out


class OpenWords(OpenRing):
    """Open XOR-shared uint64 words: both parties send; each gets the XORs."""

    __slots__ = ()
    kind = "words"
    op = staticmethod(np.bitwise_xor)


class Reveal(OpenRing):
    """Open int64 arrays to party ``to`` only: the other party sends, ``to`` gets the sums,
    the other gets None."""

    __slots__ = ()
    kind = "reveal"

    def combine(self, mine, theirs):   # a revealed value is the caller's to keep and change
        return [np.add(m, t) for m, t in zip(mine, theirs)]


#: the requests whose openings a replayed run combines into planned buffers
_BUFFERED = ("ring", "words")
#: round plans a party keeps (each holds two sets of its run's reply buffers)
MAX_ROUND_PLANS = 8


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


def outgoing(ctx: PartyContext, shape) -> np.ndarray:
    """An int64 array of ``shape`` for a value this party is about to send (a masked share):
    fresh, or in a replayed keyed run the plan's buffer for it (module doc)."""
    arena = ctx.arena
    return np.empty(shape, np.int64) if arena is None else arena.take(tuple(shape))


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
class _Arena:
    """The buffers a run's ``outgoing`` calls get: recorded (fresh arrays, shapes noted) or
    replayed (the plan's, in order, shapes checked)."""

    __slots__ = ("shapes", "bufs", "i")

    def __init__(self, shapes: list, bufs: list | None) -> None:
        self.shapes, self.bufs, self.i = shapes, bufs, 0

    def take(self, shape: tuple) -> np.ndarray:
        if self.bufs is None:
            self.shapes.append(shape)
            return np.empty(shape, np.int64)
        i = self.i
        if i >= len(self.bufs) or self.bufs[i].shape != shape:
            raise RuntimeError(f"outgoing array {i} of a replayed run leaves its plan")
        self.i = i + 1
        return self.bufs[i]


class RoundPlan:
    """A keyed run's rounds: every round's request layouts and the shapes of what it sends,
    and two alternating sets of reply and send buffers (with read-only views of the reply
    buffers), made at the first replay."""

    __slots__ = ("layouts", "sends", "slots", "uses", "channel_rounds")

    def __init__(self, layouts: list, sends: list) -> None:
        self.layouts, self.sends = layouts, sends
        self.slots: list | None = None
        self.uses = 0
        self.channel_rounds: list | None = None

    def next_slot(self, ctx: PartyContext) -> tuple[list, list]:
        """This replay's (reply buffers: per round, per request, (buffers, views) or None;
        send buffers, in ``outgoing`` order).  The first replay makes them, and validates
        every round with the channel (``Channel.plan_round``)."""
        if self.slots is None:
            self.slots = [([self._buffers(rnd) for rnd in self.layouts],
                           [np.empty(shape, np.int64) for shape in self.sends]) for _ in range(2)]
            rank, peer = ctx.rank, 1 - ctx.rank
            self.channel_rounds = [ctx.channel.plan_round(
                [a for _, _, to, arrays in rnd if to != rank for a in arrays],
                [a for _, _, to, arrays in rnd if to != peer for a in arrays]) for rnd in self.layouts]
        slot = self.slots[self.uses % 2]
        self.uses += 1
        return slot

    @staticmethod
    def _buffers(rnd: tuple) -> list:
        out = []
        for kind, _, _, arrays in rnd:
            if kind not in _BUFFERED:
                out.append(None)
                continue
            bufs = [np.empty(shape, np.dtype(dt)) for dt, shape in arrays]
            views = []
            for b in bufs:
                v = b.view()
                v.flags.writeable = False
                views.append(v)
            out.append((bufs, views))
        return out


class Scheduler:
    """Runs coroutines for one party, one channel message per direction per round."""

    def __init__(self, ctx: PartyContext, plan: StepPlan | None = None, key=None) -> None:
        self.ctx, self.plan, self.key = ctx, plan, key
        self._layouts: list | None = None    # recording a keyed run's rounds
        self._replay: list | None = None     # replaying: this run's reply buffers
        self._round_plan: RoundPlan | None = None
        self._index = 0

    def run(self, main: Coroutine):
        """Drive ``main`` and every task it spawns to completion, as one run of the source
        (keyed ``key``); return main's result."""
        ctx = self.ctx
        plan, source, key = self.plan, ctx.source, self.key
        arena = None
        if key is not None:
            plans = ctx.round_plans
            self._round_plan = rp = plans.get(key)
            if rp is None:
                self._layouts = []
                arena = _Arena([], None)
            else:
                plans.move_to_end(key)
                self._replay, sends = rp.next_slot(ctx)
                arena = _Arena(rp.sends, sends)
        if plan is not None:
            source.record(plan.material)
        source.begin(key)
        ctx.arena = arena
        ok = False
        try:
            result = self._run(main)
            ok = True
        finally:
            ctx.arena = None
            source.end(ok)
            if plan is not None:
                source.record(None)
        if self._replay is not None and (self._index != len(self._replay) or arena.i != len(arena.bufs)):
            raise RuntimeError(f"a replayed run took {self._index} of its plan's {len(self._replay)} rounds "
                               f"and {arena.i} of its {len(arena.bufs)} outgoing buffers")
        if self._layouts is not None:
            plans = ctx.round_plans
            plans[key] = RoundPlan(self._layouts, arena.shapes)
            while len(plans) > MAX_ROUND_PLANS:
                plans.popitem(last=False)
        return result

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
        planned = on_wire = None
        if self._replay is not None:
            i = self._index
            self._index = i + 1
            if i >= len(self._replay) or len(self._replay[i]) != len(requests):
                raise RuntimeError(f"round {i} of a replayed run leaves its plan (key {self.key!r})")
            planned = self._replay[i]
            on_wire = self._round_plan.channel_rounds[i]
            if len(out) != len(on_wire.sends) or any(a.shape != shp or a.dtype.str != d
                                                     for a, (d, shp) in zip(out, on_wire.sends)):
                raise RuntimeError(f"round {i} of a replayed run leaves its plan (key {self.key!r})")
        elif self._layouts is not None:
            self._layouts.append(tuple(req.layout() for req in requests))
        ch = self.ctx.channel
        if i_send and peer_sends:
            theirs = ch.exchange(out, label, on_wire)
        elif i_send:
            ch.send_only(out, label, on_wire)
            theirs = []
        else:
            theirs = ch.recv_only(label, on_wire)
        replies, pos = [], 0
        for j, req in enumerate(requests):
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
            into = planned[j] if planned is not None else None
            if into is None:
                replies.append(req.combine(mine, got))
                continue
            bufs, views = into
            if len(bufs) != n:
                raise RuntimeError("a replayed round's request leaves its plan")
            op = req.op
            for m, t, b in zip(mine, got, bufs):
                if m.shape != b.shape or m.dtype != b.dtype:
                    raise RuntimeError("a replayed round's request leaves its plan")
                op(m, t, out=b)
            replies.append(views)
        if pos != len(theirs):
            raise ValueError("peer opened arrays of a different structure")
        return replies


def run(ctx: PartyContext, value, plan: StepPlan | None = None, key=None):
    """The result of ``value``: driven by a scheduler (one run of the party's source, keyed
    ``key``: see the module doc) if it is a coroutine, else itself."""
    if isinstance(value, GeneratorType):
        return Scheduler(ctx, plan, key).run(value)
    return value
