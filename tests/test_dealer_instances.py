"""The dealer's job instances (dealer/instances.py), in one process (STYLE rule 11).

Property: whatever sequence of opens, releases and restarts, two distinct (name, nonce)
instances never share a seed; a live instance is served the same keys again (resume), an
ended one never; a test seed serves one instance only."""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dealer.instances import InstanceError, InstanceRegistry, instance_id

NAMES = ["weekly", "w", "weekly2", "a-b"]
OPS = st.one_of(
    st.tuples(st.just("open"), st.integers(0, 3), st.integers(0, 2), st.integers(0, 1),
              st.one_of(st.none(), st.integers(0, 1))),
    st.tuples(st.just("release"), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("restart")),
)


def _open_both(reg, name, nonce, digest, seed):
    assert reg.open(0, name, nonce, digest, seed, "t0") == []   # waits for the other server
    ready = reg.open(1, name, nonce, digest, seed, "t1")
    assert sorted(ready) == [(0, "t0"), (1, "t1")]
    return reg.get(name, nonce).keys


@given(nonces=st.lists(st.binary(min_size=32, max_size=32), min_size=3, max_size=3, unique=True),
       seeds=st.lists(st.binary(min_size=16, max_size=16), min_size=2, max_size=2, unique=True),
       ops=st.lists(OPS, min_size=1, max_size=14))
def test_distinct_instances_never_share_a_seed(nonces, seeds, ops):
    with tempfile.TemporaryDirectory() as root:
        reg = InstanceRegistry(root)
        # the model, keyed by the (name, nonce) pair itself
        served: dict[tuple, tuple] = {}     # (name, nonce) -> (keys, digest)
        ended: set[tuple] = set()
        seed_of: dict[bytes, tuple] = {}
        for op in ops:
            if op[0] == "restart":
                reg = InstanceRegistry(root)
                continue
            name, nonce = NAMES[op[1]], nonces[op[2]]
            iid = (name, nonce)
            if op[0] == "release":
                reg.release(name, nonce)
                ended.add(iid)
                assert not os.path.exists(os.path.join(root, "instances", f"{instance_id(*iid)}.keys"))
                continue
            digest, seed = f"digest{op[3]}", None if op[4] is None else seeds[op[4]]
            refuse = iid in ended or (iid in served and served[iid][1] != digest) or (
                iid not in served and seed is not None and seed_of.get(seed, iid) != iid)
            if refuse:
                with pytest.raises(InstanceError):
                    if iid in served or iid in ended:
                        reg.open(0, name, nonce, digest, seed, "t0")
                    else:
                        _open_both(reg, name, nonce, digest, seed)
                continue
            if iid in served:   # a resume: the same keys, answered at once
                assert reg.open(1, name, nonce, digest, seed, "t") == [(1, "t")]
                assert reg.get(name, nonce).keys == served[iid][0]
                continue
            keys = _open_both(reg, name, nonce, digest, seed)
            others = {k for j, (ks, _) in served.items() if j != iid for k in ks}
            assert len(set(keys)) == 2 and not set(keys) & others
            served[iid] = (keys, digest)
            if seed is not None:
                seed_of[seed] = iid
        # at the end: every ended instance is refused, and its keys are gone from disk
        reg = InstanceRegistry(root)
        for iid in ended:
            assert not os.path.exists(os.path.join(root, "instances", f"{instance_id(*iid)}.keys"))
            with pytest.raises(InstanceError):
                reg.get(*iid)
        all_keys = [k for ks, _ in served.values() for k in ks]
        assert len(all_keys) == len(set(all_keys))


@given(a=st.tuples(st.text(min_size=1, max_size=8), st.binary(min_size=32, max_size=32)),
       b=st.tuples(st.text(min_size=1, max_size=8), st.binary(min_size=32, max_size=32)))
def test_instance_ids_are_distinct_for_distinct_pairs(a, b):
    assert (instance_id(*a) == instance_id(*b)) == (a == b)
    # the job id is length-prefixed: moving bytes between name and nonce changes the id
    assert instance_id("ab", b"c" * 32) != instance_id("a", b"b" + b"c" * 31)
