"""The wire format of every deployed link: one msgpack header frame plus raw numpy frames.

Message layout (a ZeroMQ multipart message, or any list of byte buffers)::

    frame 0     msgpack map  {"v": PROTOCOL_VERSION, "type": str, "job": str,
                              "arrays": [[dtype, [d0, d1, ...]], ...], <body fields>}
    frame 1..n  the raw little-endian bytes of array i, exactly prod(shape) * itemsize long

No pickle anywhere: the header is plain msgpack (no extension types), payloads are bytes
whose meaning is fixed by the header's descriptors.  ``decode_message`` validates every
part against :class:`WireCaps` *before* anything is allocated from attacker-controlled
sizes, and raises :class:`WireError` (never another exception) on anything malformed.
Payload frames are wrapped without copying when the buffer is aligned.

Message-specific fields are checked with the small ``expect_*`` helpers below, so every
handler validates its inputs the same way before touching state.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np

from ..comm.channel import ALLOWED_DTYPES

__all__ = [
    "PROTOCOL_VERSION", "WireError", "WireCaps", "DEFAULT_CAPS", "encode_message",
    "decode_message", "expect_str", "expect_int", "expect_bool", "expect_float", "expect_list",
    "expect_map", "expect_bytes", "expect_arrays", "JOB_ID_RE", "pack_frames", "unpack_frames",
    "write_frames_atomic", "read_frames_file", "StoredFileError",
]

PROTOCOL_VERSION = 1
RESERVED = ("v", "type", "job", "arrays")
TYPE_RE = re.compile(r"[a-z][a-z0-9_.]{0,63}\Z")
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{0,64}\Z")


class WireError(ValueError):
    """A message (or stored frame file) is malformed, too large, or of the wrong version."""


@dataclass(frozen=True)
class WireCaps:
    """Limits every decoded message must respect; pick per link (a dealer reply is bigger)."""

    max_header_bytes: int = 64 * 1024
    max_arrays: int = 64
    max_rank: int = 6
    max_elements: int = 1 << 24          # per array
    max_total_bytes: int = 1 << 28       # all payload frames together
    max_depth: int = 12                  # nesting of header containers
    max_container: int = 4096            # items of any header list/map
    max_str: int = 16 * 1024             # bytes of any header string/bin
    dtypes: frozenset = ALLOWED_DTYPES


DEFAULT_CAPS = WireCaps()


# -- encoding ---------------------------------------------------------------------------------
def encode_message(header: dict, arrays: Sequence[np.ndarray] = ()) -> list:
    """Frames for ``header`` (must hold "type"; "job" defaults to "") and ``arrays``.

    Returns ``[header_bytes, array0, array1, ...]``; the arrays are C-contiguous
    little-endian numpy arrays that a zmq socket sends without another copy.
    """
    if not isinstance(header, dict):
        raise WireError("header must be a dict")
    bad = [k for k in header if k in ("v", "arrays")]
    if bad:
        raise WireError(f"header keys {bad} are reserved")
    h = dict(header)
    h.setdefault("job", "")
    if not isinstance(h.get("type"), str) or not TYPE_RE.match(h["type"]):
        raise WireError(f"invalid message type {h.get('type')!r}")
    if not isinstance(h["job"], str) or not JOB_ID_RE.match(h["job"]):
        raise WireError(f"invalid job id {h['job']!r}")
    payload, descr = [], []
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise WireError(f"payloads must be numpy arrays, got {type(a).__name__}")
        if a.dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"dtype {a.dtype} may not cross the wire")
        a = np.require(a, dtype=a.dtype.newbyteorder("<"), requirements="C")  # keeps 0-d shape
        descr.append([a.dtype.name, [int(s) for s in a.shape]])
        payload.append(a)
    h["v"] = PROTOCOL_VERSION
    h["arrays"] = descr
    try:
        head = msgpack.packb(h, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"header is not msgpack-serialisable: {exc}") from None
    return [head, *payload]


# -- decoding ---------------------------------------------------------------------------------
def _ext_hook(code, data):
    raise WireError(f"msgpack extension type {code} not allowed")


def _check_value(v: Any, caps: WireCaps, depth: int) -> None:
    if depth > caps.max_depth:
        raise WireError("header nested too deeply")
    if v is None or isinstance(v, (bool, int, float)):
        return
    if isinstance(v, (str, bytes)):
        if len(v) > caps.max_str:
            raise WireError("header string too long")
        return
    if isinstance(v, list):
        if len(v) > caps.max_container:
            raise WireError("header list too long")
        for x in v:
            _check_value(x, caps, depth + 1)
        return
    if isinstance(v, dict):
        if len(v) > caps.max_container:
            raise WireError("header map too large")
        for k, x in v.items():
            if not isinstance(k, str):
                raise WireError("header map keys must be strings")
            _check_value(x, caps, depth + 1)
        return
    raise WireError(f"header value of type {type(v).__name__} not allowed")


def _as_buffer(frame) -> memoryview:
    if isinstance(frame, np.ndarray):
        if not frame.flags.c_contiguous:
            raise WireError("frame array is not contiguous")
        return memoryview(frame.reshape(-1).view(np.uint8))
    try:
        mv = memoryview(frame)
    except TypeError:
        raise WireError(f"frame of type {type(frame).__name__} is not a buffer") from None
    if not mv.c_contiguous:
        raise WireError("frame buffer is not contiguous")
    if mv.format == "B" and mv.ndim == 1:
        return mv
    return mv.cast("B") if mv.nbytes else memoryview(b"")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _descriptor(d, caps: WireCaps, i: int) -> tuple[np.dtype, tuple, int]:
    if not isinstance(d, list) or len(d) != 2:
        raise WireError(f"array descriptor {i} must be [dtype, shape]")
    name, shape = d
    if not isinstance(name, str) or name not in caps.dtypes:
        raise WireError(f"array {i}: dtype {name!r} not allowed (allowed: {sorted(caps.dtypes)})")
    if not isinstance(shape, list) or len(shape) > caps.max_rank:
        raise WireError(f"array {i}: shape must be a list of at most {caps.max_rank} ints")
    n = 1
    for s in shape:
        if not _is_int(s) or s < 0:
            raise WireError(f"array {i}: invalid dimension {s!r}")
        n *= s
        if n > caps.max_elements:
            raise WireError(f"array {i}: more than {caps.max_elements} elements")
    dt = np.dtype(name).newbyteorder("<")
    return dt, tuple(shape), n * dt.itemsize


def decode_message(frames: Sequence, caps: WireCaps = DEFAULT_CAPS) -> tuple[dict, list[np.ndarray]]:
    """Validate and decode frames into ``(header, arrays)``; raises WireError on anything bad.

    The returned header holds "v", "type", "job" and the body fields ("arrays" is removed).
    Arrays are read-only views of the frames when aligned, otherwise aligned copies.
    """
    if not isinstance(frames, (list, tuple)) or not frames:
        raise WireError("a message needs at least a header frame")
    if len(frames) > caps.max_arrays + 1:
        raise WireError(f"too many frames ({len(frames)}; at most {caps.max_arrays + 1})")
    head = _as_buffer(frames[0])
    if head.nbytes > caps.max_header_bytes:
        raise WireError(f"header of {head.nbytes} bytes exceeds {caps.max_header_bytes}")
    try:
        h = msgpack.unpackb(head, raw=False, strict_map_key=True, use_list=True,
                            ext_hook=_ext_hook)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises many kinds (ExtraData, FormatError, Unicode...)
        raise WireError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(h, dict):
        raise WireError("header must be a msgpack map")
    _check_value(h, caps, 0)
    v = h.get("v")
    if not _is_int(v) or v != PROTOCOL_VERSION:
        raise WireError(f"protocol version {v!r} not supported (this side speaks {PROTOCOL_VERSION})")
    t = h.get("type")
    if not isinstance(t, str) or not TYPE_RE.match(t):
        raise WireError(f"invalid message type {t!r}")
    job = h.get("job")
    if not isinstance(job, str) or not JOB_ID_RE.match(job):
        raise WireError(f"invalid job id {job!r}")
    descr = h.pop("arrays", None)
    if not isinstance(descr, list):
        raise WireError("header lacks the 'arrays' descriptor list")
    if len(descr) != len(frames) - 1:
        raise WireError(f"header describes {len(descr)} arrays but {len(frames) - 1} payload frames came")
    total, arrays = 0, []
    for i, (d, frame) in enumerate(zip(descr, frames[1:])):
        dt, shape, nbytes = _descriptor(d, caps, i)
        total += nbytes
        if total > caps.max_total_bytes:
            raise WireError(f"payload exceeds {caps.max_total_bytes} bytes")
        buf = _as_buffer(frame)
        if buf.nbytes != nbytes:
            raise WireError(f"array {i}: frame has {buf.nbytes} bytes, descriptor says {nbytes}")
        a = np.frombuffer(buf, dtype=dt).reshape(shape)
        if not a.flags.aligned:
            a = a.copy()
        a.flags.writeable = False
        arrays.append(a)
    return h, arrays


# -- field validation helpers -----------------------------------------------------------------
def _get(h: dict, key: str, default, required: bool):
    if key in h:
        return h[key]
    if required:
        raise WireError(f"{h.get('type', 'message')}: missing field {key!r}")
    return default


def expect_str(h: dict, key: str, *, pattern: re.Pattern | None = None, max_len: int = 256,
               choices: Iterable[str] | None = None, required: bool = True, default: str = "") -> str:
    v = _get(h, key, default, required)
    if not isinstance(v, str) or len(v) > max_len:
        raise WireError(f"field {key!r} must be a string of at most {max_len} characters")
    if pattern is not None and not pattern.match(v):
        raise WireError(f"field {key!r} has an invalid value {v[:40]!r}")
    if choices is not None and v not in set(choices):
        raise WireError(f"field {key!r} must be one of {sorted(choices)}, got {v[:40]!r}")
    return v


def expect_int(h: dict, key: str, lo: int, hi: int, *, required: bool = True, default: int = 0) -> int:
    v = _get(h, key, default, required)
    if not _is_int(v) or not lo <= v <= hi:
        raise WireError(f"field {key!r} must be an integer in [{lo}, {hi}], got {str(v)[:40]}")
    return v


def expect_float(h: dict, key: str, lo: float, hi: float, *, required: bool = True,
                 default: float = 0.0) -> float:
    v = _get(h, key, default, required)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise WireError(f"field {key!r} must be a number in [{lo}, {hi}], got {str(v)[:40]}")
    return float(v)


def expect_bool(h: dict, key: str, *, required: bool = True, default: bool = False) -> bool:
    v = _get(h, key, default, required)
    if not isinstance(v, bool):
        raise WireError(f"field {key!r} must be a boolean")
    return v


def expect_bytes(h: dict, key: str, length: int, *, required: bool = True) -> bytes:
    v = _get(h, key, b"", required)
    if not isinstance(v, bytes) or len(v) != length:
        raise WireError(f"field {key!r} must be {length} bytes")
    return v


def expect_list(h: dict, key: str, max_len: int, *, required: bool = True) -> list:
    v = _get(h, key, [], required)
    if not isinstance(v, list) or len(v) > max_len:
        raise WireError(f"field {key!r} must be a list of at most {max_len} items")
    return v


def expect_map(h: dict, key: str, *, required: bool = True) -> dict:
    v = _get(h, key, {}, required)
    if not isinstance(v, dict):
        raise WireError(f"field {key!r} must be a map")
    return v


def expect_arrays(arrays: Sequence[np.ndarray], specs: Sequence[tuple], what: str) -> None:
    """Check count, dtype and shape of payloads; ``None`` in a spec shape matches any size."""
    if len(arrays) != len(specs):
        raise WireError(f"{what}: expected {len(specs)} arrays, got {len(arrays)}")
    for i, (a, (dtype, shape)) in enumerate(zip(arrays, specs)):
        if a.dtype.name != dtype:
            raise WireError(f"{what}: array {i} must be {dtype}, got {a.dtype.name}")
        if shape is not None and (len(a.shape) != len(shape) or any(
                want is not None and want != got for want, got in zip(shape, a.shape))):
            raise WireError(f"{what}: array {i} has shape {a.shape}, expected {tuple(shape)}")


# -- frames on disk (checkpoints, stored shares) ----------------------------------------------
#: a frame file: MAGIC, frame count, length-prefixed frames, then SHA-256 of all of that
_MAGIC = b"SSF2"
_SUM = hashlib.sha256
_SUM_BYTES = 32


class StoredFileError(WireError):
    """A stored file is corrupt: its checksum does not match, or it is truncated."""


def pack_frames(frames: Sequence) -> list:
    """Length-prefixed frames as a list of buffers to write in order (no checksum)."""
    out = [_MAGIC + struct.pack("<I", len(frames))]
    for f in frames:
        mv = _as_buffer(f)
        out.append(struct.pack("<Q", mv.nbytes))
        out.append(mv)
    return out


def unpack_frames(buf, max_frames: int = 4096) -> list[memoryview]:
    mv = _as_buffer(buf)
    if mv.nbytes < 8 or bytes(mv[:4]) != _MAGIC:
        raise WireError("not a frame file")
    (count,) = struct.unpack("<I", mv[4:8])
    if count > max_frames:
        raise WireError("frame file holds too many frames")
    pos, frames = 8, []
    for _ in range(count):
        if pos + 8 > mv.nbytes:
            raise WireError("frame file truncated")
        (n,) = struct.unpack("<Q", mv[pos:pos + 8])
        pos += 8
        if pos + n > mv.nbytes:
            raise WireError("frame file truncated")
        frames.append(mv[pos:pos + n])
        pos += n
    if pos != mv.nbytes:
        raise WireError("trailing bytes after the last frame")
    return frames


def write_frames_atomic(path: str | os.PathLike, frames: Sequence, mode: int = 0o600) -> None:
    """Write frames and their checksum to ``path`` via a temporary file, fsync and rename
    (crash-safe: a kill at any moment leaves the old or the new file, never a torn one)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = _SUM()
            for part in pack_frames(frames):
                digest.update(part)
                f.write(part)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_frames_file(path: str | os.PathLike, caps: WireCaps = DEFAULT_CAPS) -> tuple[dict, list[np.ndarray]]:
    """Read, verify and validate a file written by :func:`write_frames_atomic`.

    StoredFileError if the checksum does not match (one flipped bit anywhere) or the file
    is truncated; WireError if the (intact) content is not a valid message."""
    with open(path, "rb") as f:
        data = f.read()
    body = memoryview(data)[:-_SUM_BYTES]
    if len(data) < 8 + _SUM_BYTES or bytes(body[:4]) != _MAGIC:
        raise StoredFileError(f"{os.fspath(path)}: not a checksummed frame file (truncated or "
                              f"written by an older version)")
    if _SUM(body).digest() != data[-_SUM_BYTES:]:
        raise StoredFileError(f"{os.fspath(path)}: checksum mismatch (the file is corrupt)")
    return decode_message(unpack_frames(body, caps.max_arrays + 1), caps)
