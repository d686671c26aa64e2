"""Traced runs: the first run of a key records its material plan, later runs replay it with
one keystream fill per region and one dealer blob; the bytes are those of the per-item
path, keystream blocks never serve two items, plans are keyed by public facts only, and
the dealer can hand material to either party."""
from __future__ import annotations

import numpy as np
import pytest

from ss_engine.description import init_params
from ss_engine.encoding import encode
from ss_engine.job import TrainJob
from ss_engine.local_train import load_preprocessed
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.preprocessing import (Addr, DealerCore, InputMaskSpec, ItemRef, LocalDealer,
                                     MaterialPlan, PlanDeviation, SeededSource, TruncSpec)
from ss_engine.preprocessing.plan import C_REGION, R_REGION, field_blocks
from ss_engine.prg import SEED_BYTES, derive_seed
from ss_engine.training import PartyState, train_party

from .conftest import make_runtime

K0, K1 = bytes(range(SEED_BYTES)), bytes(range(1, SEED_BYTES + 1))


class PerItemSource(SeededSource):
    """A source that never replays: every run fetches its items one at a time."""

    def begin(self, key=None):
        super().begin(None)


def _sources(cls=SeededSource, start=0):
    dealer = LocalDealer(DealerCore(K0, K1))
    return dealer, (cls(0, K0, dealer.link(0), start), cls(1, K1, dealer.link(1), start))


def _a_run(src, key, n=5):
    """A run like a step's: masks, a product of two of them, a truncation, an input mask."""
    src.begin(key)
    x = src.mask((n, 3))
    w = src.mask((3, 4))
    c = src.product("matmul", x.ref("a"), w.ref("a"), (n, 4))
    t = src.trunc((n, 4), 16)
    m = src.fetch(InputMaskSpec((n,), 0))
    src.end()
    return [x, w, c, t, m]


def _fields(mats):
    return [{k: np.array(v) for k, v in m.fields.items()} for m in mats]


def test_replayed_runs_equal_the_per_item_path_and_reconstruct():
    _, traced = _sources()
    _, plain = _sources(PerItemSource)
    for run in range(4):
        got = [[_fields(_a_run(s, "k")) for s in pair] for pair in (traced, plain)]
        assert all(np.array_equal(a[k], b[k]) for pa, pb in zip(*got) for a, b in zip(pa, pb) for k in a)
        (x0, w0, c0, t0, m0), (x1, w1, c1, t1, m1) = got[0]
        a, b = x0["a"] + x1["a"], w0["a"] + w1["a"]
        assert np.array_equal(c0["c"] + c1["c"], a @ b)
        r = (t0["r"] + t1["r"]).view(np.uint64)
        assert np.array_equal(t0["r_msb"] + t1["r_msb"], (r >> np.uint64(63)).astype(np.int64))
        # the input mask: party 0 (its owner) got it in the clear, party 1 got nothing
        assert np.array_equal(m0["r_clear"], m0["r"] + m1["r"]) and "r_clear" not in m1
    s0, s1 = traced
    assert (s0.stats.recorded_runs, s0.stats.replayed_runs) == (1, 3) == (s1.stats.recorded_runs,
                                                                          s1.stats.replayed_runs)
    assert s0.next_seq == s1.next_seq == 4
    # party 0's blob holds only the input mask; party 1's the product's and truncation's part
    plan = next(iter(s0._plans.values())).plan
    assert plan.blob_elements == (5, 5 * 4 * 3)


def test_material_is_read_only_on_both_paths():
    _, (s0, _) = _sources()
    for _ in range(2):
        x = _a_run(s0, "k")[0]
        with pytest.raises(ValueError, match="read-only"):
            x["a"][0, 0] = 1


def _blocks(mats, rank):
    """Every (counter) block each item's keystream takes, per item."""
    out = []
    for m in mats:
        a, spec = m.addr, m.spec
        r = field_blocks(spec.random_fields())
        c = field_blocks(spec.corrected_fields()) if rank == 0 else 0
        out.append({(a.nonce << 64) | R_REGION | (a.r + i) for i in range(r)}
                   | {(a.nonce << 64) | C_REGION | (a.c + i) for i in range(c)})
    return out


def test_no_keystream_block_serves_two_items_and_a_resume_recomputes_the_same():
    _, (s0, s1) = _sources()
    used = {0: set(), 1: set()}
    runs = [_a_run(s, k) for k in ("a", "b", "a", None, "b", "a") for s in (s0, s1)]
    loose = [s.mask((7,)) for s in (s0, s1)]               # an item outside any run
    for i, mats in enumerate(runs + [[m] for m in loose]):
        rank = i % 2
        for blocks in _blocks(mats, rank):
            assert (blocks or rank == 1) and not blocks & used[rank]   # party 1 expands no product
            used[rank] |= blocks
    nonces = [m[0].addr.nonce for m in runs[::2]] + [loose[0].addr.nonce]
    assert nonces == sorted(set(nonces))
    # a resume from run 4's position recomputes run 4 and 5 exactly, replaying or not
    _, (r0, r1) = _sources(start=4)
    again = [_a_run(s, k) for k in ("b", "a") for s in (r0, r1)]
    for new, old in zip(again, runs[8:12]):
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(_fields(new), _fields(old)) for k in a)


def test_the_dealer_regenerates_a_run_from_keys_nonce_and_plan():
    _, (s0, s1) = _sources()
    for _ in range(3):
        mats = _a_run(s1, "k")
    plan = next(iter(s1._plans.values())).plan
    fresh = DealerCore(K0, K1).step(mats[0].addr.nonce, plan)
    got = np.concatenate([mats[2]["c"].ravel(), mats[3]["r_msb"].ravel(), mats[3]["r_hi"].ravel()])
    assert np.array_equal(fresh[1], got)
    assert MaterialPlan.from_wire(plan.to_wire()).digest == plan.digest


def test_a_run_that_leaves_its_plan_is_refused():
    _, (s0, _) = _sources()
    _a_run(s0, "k")
    s0.begin("k")
    s0.mask((5, 3))
    with pytest.raises(PlanDeviation, match="item 1"):
        s0.mask((3, 5))
    s0.end(ok=False)
    s0.begin("k")
    s0.mask((5, 3))
    with pytest.raises(PlanDeviation, match="fetched 1 of"):
        s0.end()
    # the product must name this run's masks, not the last run's
    s0.begin("k")
    x, w = s0.mask((5, 3)), s0.mask((3, 4))
    with pytest.raises(PlanDeviation, match="item 2"):
        s0.product("matmul", ItemRef(Addr(0, x.addr.r, x.addr.c), x.spec, "a"), w.ref("a"), (5, 4))


def test_a_run_bound_to_one_plan_gets_no_other():
    dealer, (s0, s1) = _sources()
    plan_a = MaterialPlan([TruncSpec((4,), 16)])
    plan_b = MaterialPlan([TruncSpec((5,), 16)])
    dealer.announce(3, [(3, plan_a)])
    with pytest.raises(PlanDeviation, match="another plan"):
        dealer.announce(3, [(3, plan_b)])
    assert dealer.blob(1, 3, plan_a).shape == (8,)


def _train(loss_every=0, n=72, batch=16, epochs=1, source_cls=SeededSource, **job_args):
    x, y, _, _ = load_preprocessed("mnist-small", n, 1)
    rt = make_runtime(seed=b"plans")
    for c in rt.contexts:
        c.source = source_cls(c.rank, derive_seed(b"plans", f"party{c.rank}"), rt.local_dealer.link(c.rank))
    fx = rt.config.fixed
    p0, p1 = share_arrays({k: encode(v, fx) for k, v in init_params("network-a", 0).items()}, rt._input_prg)
    xs, ys = rt.share_ring(encode_images(x, fx)), rt.share_ring(encode_labels(y, fx))
    job = TrainJob(batch_size=batch, epochs=epochs, loss_every=loss_every, **job_args)
    st = [PartyState(dict(p0)), PartyState(dict(p1))]
    losses = []

    def on_step(step, epoch, state, py):
        if py is not None and state is st[0]:
            losses.append(step)
    rt.run(train_party, (xs[0], ys[0], job, st[0], on_step), (xs[1], ys[1], job, st[1], on_step))
    rt.close()
    return rt, {k: st[0].params[k] + st[1].params[k] for k in st[0].params}, losses


def test_training_replays_each_public_shape_and_equals_the_per_item_path():
    """Every third step reports the loss and the last batch is short (72 = 4 x 16 + 8): three
    plan keys, each recorded once and replayed after; the model equals that of a run that
    never replays, bit for bit; party 0 never hears from the dealer."""
    rt, traced, losses = _train(loss_every=3, epochs=2)
    _, plain, losses_plain = _train(loss_every=3, epochs=2, source_cls=PerItemSource)
    assert losses == losses_plain == [2, 5, 8]
    assert all(np.array_equal(traced[k], plain[k]) for k in plain)
    s0, s1 = (c.source.stats for c in rt.contexts)
    # keys: (16 rows, no report) at step 0, (16, report) at 2, (8, no report) at 4 and 9
    assert s0.recorded_runs == s1.recorded_runs == 3 and s0.replayed_runs == s1.replayed_runs == 7
    assert s0.dealer_bytes == 0 < s1.dealer_bytes
    assert rt.local_dealer.blobs_taken == {0: 0, 1: 7}


def test_adam_training_replays_and_equals_the_per_item_path():
    """Adam's truncation shifts follow its bias corrections and its first step has no second
    moment: a step keyed by its batch alone would leave the plan of the step before
    (PlanDeviation at step 3); keyed by its count, every step records its own plan, and the
    model equals the per-item run's bit for bit."""
    rt, traced, _ = _train(epochs=1, optimizer="adam", lr=0.01)
    _, plain, _ = _train(epochs=1, optimizer="adam", lr=0.01, source_cls=PerItemSource)
    assert all(np.array_equal(traced[k], plain[k]) for k in plain)
    s0, s1 = (c.source.stats for c in rt.contexts)
    assert s0.recorded_runs == s1.recorded_runs == 5 and s0.replayed_runs == s1.replayed_runs == 0
