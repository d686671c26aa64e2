import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine.prg import PRG, SEED_BYTES, derive_seed
from ss_engine.sharing import reconstruct, reconstruct_xor, share, share_xor

int64s = st.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max)
ring_arrays = hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=7), elements=int64s)


def test_prg_is_deterministic_per_seed_and_nonce():
    s = bytes(range(SEED_BYTES))
    assert np.array_equal(PRG(s).random_int64((100,)), PRG(s).random_int64((100,)))
    assert not np.array_equal(PRG(s).random_int64((100,)), PRG(s, nonce=1).random_int64((100,)))
    assert not np.array_equal(PRG(s).random_int64((100,)), PRG(derive_seed(s, 1)).random_int64((100,)))


def test_prg_from_os_random_differs():
    assert not np.array_equal(PRG.from_os_random().random_int64((8,)), PRG.from_os_random().random_int64((8,)))


def test_prg_rejects_bad_seed():
    with pytest.raises(ValueError):
        PRG(b"short")


def test_prg_bits_are_balanced():
    v = PRG(bytes(SEED_BYTES)).random_uint64((200_000,))
    ones = np.unpackbits(v.view(np.uint8)).mean()
    assert abs(ones - 0.5) < 0.002


@given(ring_arrays)
def test_share_reconstruct_identity(x):
    s0, s1 = share(x, PRG(bytes(SEED_BYTES)))
    assert s0.shape == x.shape
    assert np.array_equal(reconstruct(s0, s1), x)


@given(hnp.arrays(np.uint64, hnp.array_shapes(max_dims=2, max_side=9),
                  elements=st.integers(0, 2 ** 64 - 1)))
def test_xor_share_identity(w):
    s0, s1 = share_xor(w, PRG(bytes(SEED_BYTES)))
    assert np.array_equal(reconstruct_xor(s0, s1), w)


def test_reconstruct_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruct(np.zeros(3, np.int64), np.zeros(4, np.int64))


def _chi2_uniform_bytes(values: np.ndarray) -> float:
    counts = np.bincount(values.view(np.uint8), minlength=256)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("secret", [0, 1, -1, 2 ** 40, np.iinfo(np.int64).min])
def test_one_share_is_independent_of_the_secret(secret):
    """Party 1's share has the same (uniform) distribution whatever the secret."""
    prg = PRG.from_os_random()
    _, s1 = share(np.full(50_000, secret, np.int64), prg)
    # chi-square with 255 degrees of freedom: 99.9th percentile is about 330
    assert _chi2_uniform_bytes(s1) < 330
    _, s1_zero = share(np.zeros(50_000, np.int64), prg)
    # the two samples are indistinguishable in their top byte (two-sample test)
    a = np.bincount((s1.view(np.uint64) >> np.uint64(56)).astype(np.int64), minlength=256)
    b = np.bincount((s1_zero.view(np.uint64) >> np.uint64(56)).astype(np.int64), minlength=256)
    stat = (((a - b) ** 2) / np.maximum(a + b, 1)).sum()
    assert stat < 330


def test_counter_stream_is_aes_ctr_on_both_paths():
    """Block b of the stream is AES_key(b): fills from any counter, long or short, whole
    or partial last block, equal AES-CTR from that counter, and touch nothing around them."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from ss_engine.prg import CounterStream
    key = bytes(range(SEED_BYTES))
    s = CounterStream(key)
    n = 3 * CounterStream.SMALL + 100
    for ctr in (9 << 64, (9 << 64) | 12345, (3 << 64) | (1 << 63)):
        ref = Cipher(algorithms.AES(key), modes.CTR(ctr.to_bytes(16, "big"))).encryptor().update(bytes(n))
        for m in (0, 1, 15, 16, 17, 1000, CounterStream.SMALL, CounterStream.SMALL + 1, n):
            assert s.keystream(ctr, m).tobytes() == ref[:m], (ctr, m)   # both paths
        for lo, hi in ((5, 38), (3, 3 + CounterStream.SMALL + 7)):
            buf = np.full(hi + 40, 7, np.uint8)
            s.fill(ctr, buf, lo, hi)
            assert buf[lo:hi].tobytes() == ref[:hi - lo]
            assert (buf[:lo] == 7).all() and (buf[hi:] == 7).all()
    assert s.keystream(10 << 64, 64).tobytes() != s.keystream(9 << 64, 64).tobytes()
    with pytest.raises(ValueError, match="leave its nonce"):
        s.keystream((1 << 64) - 1, 32)          # would carry into the next nonce
