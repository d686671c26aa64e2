"""The scheduler: concurrent tasks share rounds, one message per direction per round; a
training step's plan is the same every step; the per-step bars of both models."""
from __future__ import annotations

import numpy as np
import pytest

from ss_engine import protocols as P
from ss_engine.description import init_params
from ss_engine.encoding import encode
from ss_engine.job import TrainJob
from ss_engine.nn import StepHooks
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.protocols.rounds import StepPlan, gather, join, reveal_to, spawn
from ss_engine.training import PartyState, train_party

from .conftest import make_runtime


def _stats(rt):
    return [(c.channel.stats.rounds, c.channel.stats.messages_sent, c.channel.stats.bytes_sent)
            for c in rt.contexts]


def test_independent_protocols_share_rounds():
    """Two ReLUs (4 rounds each) and a truncation run concurrently: 4 rounds, not 9, the
    bytes of all three, and results equal to running them one after the other."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(-(1 << 40), 1 << 40, (2, 50))
    t = rng.integers(-(1 << 50), 1 << 50, 30)

    def together(ctx, x, y, z):
        return (yield from gather(P.relu_s(ctx, x), P.relu_s(ctx, y), P.trunc_s(ctx, z, 16)))

    def apart(ctx, x, y, z):
        return [(yield from P.relu_s(ctx, x)), (yield from P.relu_s(ctx, y)),
                (yield from P.trunc_s(ctx, z, 16))]

    out, st = {}, {}
    for name, fn in (("together", together), ("apart", apart)):
        rt = make_runtime()
        r0, r1 = rt.run_same(fn, rt.share_ring(a), rt.share_ring(b), rt.share_ring(t))
        out[name] = (r0[0][0] + r1[0][0], r0[1][0] + r1[1][0], r0[2] + r1[2])
        st[name] = _stats(rt)
    assert np.array_equal(out["together"][0], np.maximum(a, 0))
    assert np.array_equal(out["together"][1], np.maximum(b, 0))
    assert set(np.unique(out["together"][2] - (t >> 16))) <= {0, 1}
    assert st["apart"][0][:2] == (9, 9)
    # one message per direction per round, the same bytes
    assert st["together"][0] == (4, 4, st["apart"][0][2])
    assert st["together"][0] == st["together"][1]


def test_spawn_join_one_way_rounds_and_stuck_tasks():
    rt = make_runtime()
    x = np.arange(6, dtype=np.int64)

    def body(ctx, v):
        task = yield from spawn(P.reveal_s(ctx, v, to=1))
        opened = yield from P.open_many(ctx, [v])     # merged with the one-way reveal
        return opened[0], (yield from join(task))

    (o0, r0), (o1, r1) = rt.run_same(body, rt.share_ring(x))
    assert np.array_equal(o0, x) and np.array_equal(o1, x) and r0 is None and np.array_equal(r1, x)
    assert rt.contexts[0].channel.stats.rounds == 1
    assert [c.channel.stats.bytes_sent for c in rt.contexts] == [96, 48]

    rt = make_runtime()

    def one_way(ctx, v):                 # only party 0 sends: a one-way round
        return (yield from reveal_to(ctx, [v], to=1))

    r0, r1 = rt.run_same(one_way, rt.share_ring(x))
    assert r0 is None and np.array_equal(r1[0], x)
    assert [c.channel.stats.messages_sent for c in rt.contexts] == [1, 0]

    def waits_on_itself(ctx):
        holder = []

        def inner():
            yield from join(holder[0])

        holder.append((yield from spawn(inner())))
        yield from join(holder[0])

    with pytest.raises(Exception, match="can never finish"):
        make_runtime().run(waits_on_itself)
    with pytest.raises(Exception, match="not a round request"):
        make_runtime().run(lambda ctx: (yield 5))


def _training(model, batch, steps, hooks=None, loss_every=0):
    from ss_engine.local_train import load_preprocessed
    x, y, _, _ = load_preprocessed("mnist-small", batch * steps, 1)
    rt = make_runtime(seed=b"plan")
    fx = rt.config.fixed
    p0, p1 = share_arrays({k: encode(v, fx) for k, v in init_params(model, 0).items()}, rt._input_prg)
    xs, ys = rt.share_ring(encode_images(x, fx)), rt.share_ring(encode_labels(y, fx))
    job = TrainJob(model=model, batch_size=batch, epochs=1, loss_every=loss_every)
    st = [PartyState(p0), PartyState(p1)]
    counts = []

    def on_step(step, epoch, state, py):
        if state is st[0]:
            s = rt.contexts[0].channel.stats
            counts.append((s.rounds, s.bytes_sent))

    rt.run(train_party, (xs[0], ys[0], job, st[0], on_step), (xs[1], ys[1], job, st[1], on_step),
           hooks=hooks)
    return [(r1 - r0, b1 - b0) for (r0, b0), (r1, b1) in zip([(0, 0)] + counts, counts)]


class PlanHooks(StepHooks):
    def __init__(self):
        self.plans: dict[int, list[StepPlan]] = {}

    def step_plan(self, step):
        plan = StepPlan()
        self.plans.setdefault(step, []).append(plan)   # one per party, in thread order
        return plan


def test_a_steps_plan_is_the_same_every_step():
    """Record two consecutive steps: every round's message layout and every material item
    (sequence numbers relative to the step) are identical, on both parties; the plan's
    layouts account for every byte and round the channel counted."""
    hooks = PlanHooks()
    per_step = _training("network-a", 8, 2, hooks)
    first = hooks.plans[0][0].normalized()
    # both steps, both parties
    assert all(p.normalized() == first for s in (0, 1) for p in hooks.plans[s])
    assert len(first[0]) == per_step[0][0] and len(first[1]) == 154
    assert hooks.plans[1][0].bytes_sent[0] == per_step[1][1]
    rounds = first[0]
    assert all(r.items_before <= s.items_before for r, s in zip(rounds, rounds[1:]))


@pytest.mark.parametrize("model,batch,rounds,nbytes", [
    # 54 rounds and 4,905,392 bytes before the scheduler: the ReLU bits are no longer opened
    # (linear forms), the logits' truncation is folded into the softmax's exp (53 rounds,
    # 4,633,008 bytes); then the comparator of blocks of 4 bits and fan-in-4 gates: each of
    # the two ReLUs 4 rounds instead of 7 and the softmax's max of 10 5 instead of 11 (41,
    # 4,347,744); then the softmax's exp split and Goldschmidt division (24 -> 16 rounds;
    # 13 comparisons more per logit, in Z_2^32)
    ("network-a", 128, 33, 4_541_824),
    # 95 rounds and 37,295,936 bytes before: as above, and the input gradient of the first
    # Linear reaches the ReLU below the Flatten untruncated (one truncation, no opening),
    # 93 and 35,797,824; then the comparator: three ReLUs -9, two 2x2 max-pool tournaments
    # -6 each (two levels of 4 rounds instead of 7), the softmax's max -6 (66, 31,387,064);
    # then the softmax's new exp and division, -8
    ("lenet", 64, 58, 31_484_104),
])
def test_per_step_rounds_and_bytes_of_both_models(model, batch, rounds, nbytes):
    """The bars (network-a <= 54 rounds, <= 4.91 MB; LeNet <= 95, <= 37.3 MB) exactly."""
    per_step = _training(model, batch, 2)
    assert per_step == [(rounds, nbytes)] * 2
