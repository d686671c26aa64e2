"""Wire format: round trip, strict validation, and mutation robustness (hypothesis)."""
from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine.net.wire import (PROTOCOL_VERSION, StoredFileError, WireCaps, WireError,
                                 decode_message, encode_message, expect_arrays, expect_int,
                                 expect_str, read_frames_file, unpack_frames, write_frames_atomic)

DTYPES = ["int64", "uint64", "int32", "uint32", "uint8"]

arrays_st = st.lists(
    st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(
        np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))),
    max_size=4)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=12)
bodies = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("v", "arrays", "type", "job")),
                         values, max_size=5)
headers = st.builds(lambda t, j, b: {"type": t, "job": j, **b},
                    st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True),
                    st.from_regex(r"[A-Za-z0-9_-]{0,12}", fullmatch=True), bodies)


def _same(h1, a1, h2, a2):
    assert h1 == h2
    assert len(a1) == len(a2)
    for x, y in zip(a1, a2):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


@settings(max_examples=200, deadline=None)
@given(headers, arrays_st)
def test_round_trip(header, arrays):
    frames = encode_message(header, arrays)
    h, got = decode_message([f.tobytes() if isinstance(f, np.ndarray) else f
                             for f in frames])
    _same(h, got, {**header, "v": PROTOCOL_VERSION}, arrays)
    for a in got:
        assert not a.flags.writeable


def _mutations(frames, data):
    frames = [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "add", "swap", "replace"]))
    out = list(frames)
    i = data.draw(st.integers(0, len(out) - 1))
    if kind == "flip" and out[i]:
        b = bytearray(out[i])
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= data.draw(st.integers(1, 255))
        out[i] = bytes(b)
    elif kind == "truncate":
        out[i] = out[i][: data.draw(st.integers(0, max(0, len(out[i]) - 1)))]
    elif kind == "extend":
        out[i] = out[i] + data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "drop":
        del out[i]
    elif kind == "add":
        out.insert(i, data.draw(st.binary(max_size=64)))
    elif kind == "swap" and len(out) > 1:
        j = data.draw(st.integers(0, len(out) - 1))
        out[i], out[j] = out[j], out[i]
    elif kind == "replace":
        out[i] = data.draw(st.binary(max_size=64))
    return out


@settings(max_examples=600, deadline=None)
@given(headers, arrays_st, st.data())
def test_mutations_decode_cleanly_or_raise_wire_error(header, arrays, data):
    frames = _mutations(encode_message(header, arrays), data)
    try:
        h, got = decode_message(frames, WireCaps(max_elements=1 << 12))
    except WireError:
        return
    # Whatever decodes is a valid message: it re-encodes and decodes to itself.
    body = {k: v for k, v in h.items() if k != "v"}
    h2, got2 = decode_message(encode_message(body, got))
    _same(h, got, h2, got2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=0, max_size=5))
def test_random_bytes_never_raise_anything_else(frames):
    try:
        decode_message(frames)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(values)
def test_random_msgpack_headers(value):
    try:
        decode_message([msgpack.packb(value, use_bin_type=True)])
    except WireError:
        pass


def _header(**kw):
    h = {"v": PROTOCOL_VERSION, "type": "x", "job": "", "arrays": []}
    h.update(kw)
    return msgpack.packb(h, use_bin_type=True)


@pytest.mark.parametrize("frames, needle", [
    ([], "at least a header"),
    ([_header(v=2)], "protocol version 2"),
    ([_header(v=True)], "protocol version"),
    ([_header(type="BAD TYPE")], "invalid message type"),
    ([_header(job="../etc")], "invalid job id"),
    ([_header(arrays=[["float64", [2]]]), b"\0" * 16], "dtype 'float64' not allowed"),
    ([_header(arrays=[["object", [1]]]), b"\0" * 8], "not allowed"),
    ([_header(arrays=[["int64", [2]]]), b"\0" * 15], "frame has 15 bytes"),
    ([_header(arrays=[["int64", [2]]])], "describes 1 arrays but 0"),
    ([_header(arrays=[["int64", [1] * 7]]), b"\0" * 8], "at most 6"),
    ([_header(arrays=[["int64", [2**40, 2**40]]]), b""], "more than"),
    ([_header(arrays=[["int64", [-1]]]), b""], "invalid dimension"),
    ([_header(arrays=[["int64", [True]]]), b""], "invalid dimension"),
    ([_header(x=msgpack.ExtType(1, b"a"))], "extension type"),
    ([b"\x81\x01\x02"], "not valid msgpack"),
    ([b"\x93\x01\x02\x03"], "must be a msgpack map"),
    ([b"x" * 70000], "exceeds"),
    ([_header(arrays=[["int64", [1]]]), object()], "not a buffer"),
])
def test_specific_rejections(frames, needle):
    with pytest.raises(WireError, match=needle):
        decode_message(frames)


def test_reserved_and_bad_payloads_refused_on_encode():
    with pytest.raises(WireError):
        encode_message({"type": "x", "v": 3})
    with pytest.raises(WireError):
        encode_message({"type": "x"}, [np.zeros(2, dtype=np.float64)])
    with pytest.raises(WireError):
        encode_message({"type": "x"}, [[1, 2]])
    with pytest.raises(WireError):
        encode_message({"type": "x", "o": object()})


def test_zero_copy_aligned_view():
    a = np.arange(1000, dtype=np.int64)
    frames = encode_message({"type": "t"}, [a])
    assert np.shares_memory(frames[1], a)  # no copy on the sending side
    payload = np.arange(1000, dtype=np.int64)
    _, (b,) = decode_message([frames[0], payload])
    assert np.shares_memory(b, payload) and np.array_equal(b, a)  # none on the receiving side


def test_expect_helpers():
    h = {"type": "t", "n": 5, "s": "abc", "b": True}
    assert expect_int(h, "n", 0, 10) == 5
    with pytest.raises(WireError, match="missing field 'm'"):
        expect_int(h, "m", 0, 1)
    with pytest.raises(WireError, match=r"integer in \[0, 4\]"):
        expect_int(h, "n", 0, 4)
    with pytest.raises(WireError):
        expect_int(h, "b", 0, 4)  # bools are not ints
    with pytest.raises(WireError):
        expect_str(h, "s", choices=["x"])
    with pytest.raises(WireError, match="expected"):
        expect_arrays([np.zeros((2, 3), np.int64)], [("int64", (2, 4))], "upload")
    expect_arrays([np.zeros((2, 3), np.int64)], [("int64", (None, 3))], "upload")


def test_frame_files_atomic_and_validated(tmp_path):
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    p = tmp_path / "ck.bin"
    write_frames_atomic(p, encode_message({"type": "ckpt", "step": 3}, [a]))
    assert (os.stat(p).st_mode & 0o777) == 0o600
    h, (b,) = read_frames_file(p)
    assert h["step"] == 3 and np.array_equal(a, b)
    data = p.read_bytes()
    p.write_bytes(data[:-1])
    with pytest.raises(StoredFileError):
        read_frames_file(p)
    with pytest.raises(WireError):
        unpack_frames(b"nope")
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]


def test_frame_files_refuse_every_single_bit_flip(tmp_path):
    """A flipped bit anywhere (header, payload, lengths, checksum) is refused, never read
    as a different value: each stored file carries a SHA-256 of its content."""
    a = np.arange(40, dtype=np.int64).reshape(5, 8)
    p = tmp_path / "ck.bin"
    write_frames_atomic(p, encode_message({"type": "ckpt", "step": 3}, [a]))
    data = p.read_bytes()
    for bit in range(0, 8 * len(data), 7):   # 1 bit in 7 of the file: ~500 flips
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        p.write_bytes(bytes(bad))
        with pytest.raises(StoredFileError):
            read_frames_file(p)
    p.write_bytes(data[:-40])                 # truncated
    with pytest.raises(StoredFileError):
        read_frames_file(p)
    p.write_bytes(data)
    assert np.array_equal(read_frames_file(p)[1][0], a)
