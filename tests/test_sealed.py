"""AES-GCM sealing of the peer channel's data frames: round trip, and every tampering or
replay fails authentication."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ss_engine.net.sealed import KEY_BYTES, FrameSealer, SealError, new_key

frames_st = st.lists(st.binary(max_size=300), min_size=1, max_size=5)


@given(frames_st, st.integers(0, 2**64 - 1))
def test_round_trip(frames, counter):
    key = new_key()
    sealed = FrameSealer(key, b"a").seal(counter, frames)
    assert all(len(c) == len(p) + 16 for c, p in zip(sealed, frames))
    assert FrameSealer(key, b"a").open(counter, sealed) == frames


@given(frames_st, st.integers(0, 2**63), st.data())
def test_any_change_fails(frames, counter, data):
    key = new_key()
    sealed = FrameSealer(key, b"a").seal(counter, frames)
    opener = FrameSealer(key, b"a")
    i = data.draw(st.integers(0, len(sealed) - 1))
    pos = data.draw(st.integers(0, len(sealed[i]) - 1))
    flipped = list(sealed)
    flipped[i] = sealed[i][:pos] + bytes([sealed[i][pos] ^ 1]) + sealed[i][pos + 1:]
    bad = [flipped,                                   # a flipped bit
           sealed[:-1] + [sealed[-1][:-1]],           # a truncated frame
           sealed + [sealed[0]]]                      # a frame added
    if len(sealed) > 1:
        bad += [sealed[:-1], sealed[1:] + sealed[:1]]  # a frame dropped, frames reordered
    for frames_bad in bad:
        with pytest.raises(SealError):
            opener.open(counter, frames_bad)
    with pytest.raises(SealError):
        opener.open(counter + 1, sealed)              # replayed as a later message
    with pytest.raises(SealError):
        FrameSealer(new_key(), b"a").open(counter, sealed)   # another key
    with pytest.raises(SealError):
        FrameSealer(key, b"b").open(counter, sealed)         # the other direction's label


def test_numpy_frames_and_bad_keys():
    key = new_key()
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    (c,) = FrameSealer(key, b"x").seal(7, [a])
    (p,) = FrameSealer(key, b"x").open(7, [c])
    assert np.array_equal(np.frombuffer(p, np.int64).reshape(3, 4), a)
    for bad in (b"", bytes(KEY_BYTES - 1), "k" * KEY_BYTES):
        with pytest.raises(ValueError):
            FrameSealer(bad, b"x")
    with pytest.raises(SealError):
        FrameSealer(key, b"x").open(7, [])


@given(frames_st, st.integers(0, 2**64 - 1))
def test_sealing_into_buffers_equals_sealing(frames, counter):
    """``seal_into``/``open_into`` (the stream's reused buffers) give the same ciphertexts as
    ``seal`` and the same plaintexts as ``open``, each opened frame 16-byte aligned."""
    key = new_key()
    sealed = FrameSealer(key, b"a").seal(counter, frames)
    out = bytearray(sum(len(f) + 16 for f in frames))
    sizes = FrameSealer(key, b"a").seal_into(counter, frames, memoryview(out))
    assert sizes == [len(c) for c in sealed] and bytes(out) == b"".join(sealed)
    plain = bytearray(sum(len(f) + 16 for f in frames))
    views = FrameSealer(key, b"a").open_into(counter, [memoryview(c) for c in sealed], memoryview(plain))
    assert [bytes(v) for v in views] == frames
    base = np.frombuffer(plain, np.uint8).ctypes.data
    assert all((np.frombuffer(v, np.uint8).ctypes.data - base) % 16 == 0 for v in views if len(v))
    flipped = bytearray(sealed[0])
    flipped[0] ^= 1
    with pytest.raises(SealError):
        FrameSealer(key, b"a").open_into(counter, [memoryview(flipped), *sealed[1:]], memoryview(plain))
