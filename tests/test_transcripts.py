"""What a party receives is independent of the secrets: the transcript of a protocol run
on one secret is distributed like the transcript on another (two-sample chi-square on the
received bytes, per message)."""
import numpy as np
import pytest

from ss_engine import protocols as P

from .conftest import make_runtime


def received_bytes(fn, secret, seed):
    rt = make_runtime(seed=seed)
    got = []
    ch = rt.contexts[1].channel
    inner = ch._recv

    def spy():
        arrays = inner()
        got.append(np.concatenate([a.view(np.uint8).ravel() for a in arrays]))
        return arrays

    ch._recv = spy
    rt.run_same(fn, rt.share_ring(secret))
    return got


def chi2_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    ca = np.bincount(a, minlength=256).astype(float)
    cb = np.bincount(b, minlength=256).astype(float)
    return float((((ca - cb) ** 2) / np.maximum(ca + cb, 1)).sum())


@pytest.mark.parametrize("name,fn", [
    ("relu", P.relu_s),
    ("matmul", lambda c, x: P.matmul_ss(c, x.reshape(64, 64), x.reshape(64, 64))),
    ("trunc", lambda c, x: P.trunc_s(c, x, 16)),
])
def test_transcript_does_not_depend_on_the_secret(name, fn):
    n = 64 * 64
    zeros = np.zeros(n, np.int64)
    big = np.full(n, 12345 << 16, np.int64)
    t0 = received_bytes(fn, zeros, b"t0")
    t1 = received_bytes(fn, big, b"t1")
    assert len(t0) == len(t1)  # same message sequence: no secret-dependent branch
    for m0, m1 in zip(t0, t1):
        assert m0.size == m1.size
        if m0.size >= 4096:
            # 255 degrees of freedom: the 99.99th percentile is about 350
            assert chi2_two_sample(m0, m1) < 350, name
