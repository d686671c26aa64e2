"""Fuzz the live processes: 1,000 hostile messages to the servers, 300 to the dealer
(``python -m benchmarks.deploy_fuzz`` runs 10,000 + 2,000).  Every one is answered, no
process dies, the victim job's stored model is unchanged, and serving goes on."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.deploy_fuzz import run_fuzz
from client.session import ClientSession
from client.train import train_remote
from ss_engine.request import TrainRequest

from .test_deploy_helpers import start


@pytest.fixture
def dep(tmp_path):
    d = start(tmp_path)
    try:
        yield d
    finally:
        d.stop()
        assert not any(h.alive() for h in d.handles.values())


def test_fuzz_live_processes(dep):
    r = train_remote(dep.config, TrainRequest.build(dataset="mnist-small", train_limit=64,
                     test_limit=10, batch_size=32, secure_eval=0, progress=False), timeout=120,
                     keep_job=True)
    with ClientSession(dep.config) as s:
        before = s.fetch(r["job"])
    stats = run_fuzz(dep, r["job"], count=1000, seed=1, dealer_count=300)
    assert stats["hangs"] == 0, stats
    assert stats["answered"] >= 1000 and not stats.get("undecodable_replies"), stats
    assert all(h.alive() for h in dep.handles.values()), {n: h.tail() for n, h in dep.handles.items()}
    with ClientSession(dep.config) as s:
        after = s.fetch(r["job"])
        assert len(s.ping()) == 2
        st = s.status(r["job"])
        assert [h["state"] for h, _ in st] == ["done", "done"]
    for p in (0, 1):
        for k in before[p]:
            assert np.array_equal(before[p][k], after[p][k])
    # a new job still trains after the storm
    r2 = train_remote(dep.config, TrainRequest.build(dataset="mnist-small", train_limit=32,
                      test_limit=10, batch_size=32, secure_eval=0, progress=False), timeout=120)
    assert r2["steps"] == 1
