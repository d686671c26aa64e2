"""The local runtime: failures propagate without hangs; kernels are safe from two threads."""
import threading

import numpy as np
import pytest

from ss_engine import kernels
from ss_engine import protocols as P
from ss_engine.simulate import PartyFailed

from .conftest import make_runtime


def test_failure_in_one_party_does_not_hang_the_other():
    rt = make_runtime()

    def body(ctx):
        if ctx.rank == 1:
            raise RuntimeError("boom in party 1")
        return P.open_many(ctx, [np.zeros(3, np.int64)])  # would wait forever for party 1

    with pytest.raises(PartyFailed, match="boom in party 1"):
        rt.run(body)


def test_concurrent_kernel_calls_from_party_threads():
    rng = np.random.default_rng(0)
    a = rng.integers(-2 ** 62, 2 ** 62, (96, 200))
    b = rng.integers(-2 ** 62, 2 ** 62, (200, 64))
    want = kernels.ring_matmul_np(a, b)
    bad = []

    def worker():
        for _ in range(20):
            if not np.array_equal(kernels.ring_matmul(a, b), want):
                bad.append(1)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_same_seed_same_transcript_different_seed_different_masks():
    x = np.arange(20, dtype=np.int64) << 16

    def transcript(seed):
        rt = make_runtime(seed=seed)
        sent = []
        orig = rt.contexts[0].channel._send
        rt.contexts[0].channel._send = lambda arrays: (sent.extend(a.copy() for a in arrays), orig(arrays))[1]
        (y0, _), (y1, _) = rt.run_same(P.relu_s, rt.share_ring(x))
        return sent, y0 + y1

    s1, y = transcript(b"a")
    s2, _ = transcript(b"a")
    s3, _ = transcript(b"b")
    assert np.array_equal(y, x)
    assert all(np.array_equal(u, v) for u, v in zip(s1, s2))
    assert not np.array_equal(s1[0], s3[0])
