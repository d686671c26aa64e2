"""AES-256-GCM sealing of multipart messages: the bulk data plane of the peer channel.

Why: libzmq's CurveZMQ encrypts every message in its single I/O thread with
XSalsa20-Poly1305 after an extra copy; on this 2-core machine that cost ~100 ms of each
~260 ms network-a training step (measured: 155 ms per step with the data frames off Curve).
AES-GCM with AES-NI runs at ~7 GB/s here, so the peer channel keeps CurveZMQ for what it
is best at — authenticating the peer by its long-term key and carrying the session's
secrets — and seals the data frames itself (``ZmqPeerChannel(bulk="aes-gcm")``).

Keys: each party draws a fresh 256-bit key for the messages it *sends* from ``os.urandom``
and gives it to the peer inside the CurveZMQ handshake message, so only the authenticated
peer ever holds it, and every session has new keys.

Nonces never repeat under a key: frame ``i`` of message ``counter`` uses the 96-bit nonce
``i (4 bytes LE) || counter (8 bytes LE)``; a sender never reuses a counter.  The AAD binds
the link label, the counter, the frame index and the frame count, so frames cannot be
replayed, reordered, dropped from, moved between or added to messages without
``SealError``.  The receiver always opens with the counter it expects next.
"""
from __future__ import annotations

import os
import struct
from typing import Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["FrameSealer", "SealError", "KEY_BYTES", "TAG_BYTES", "new_key"]

KEY_BYTES = 32
TAG_BYTES = 16
_MAX_FRAMES = 1 << 16


class SealError(ValueError):
    """A sealed message failed authentication (wrong key, counter, order or content)."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _octets(frame):
    """A flat byte view of a frame without copying (numpy arrays of any rank included)."""
    if isinstance(frame, np.ndarray):
        return np.ascontiguousarray(frame).reshape(-1).view(np.uint8)
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class FrameSealer:
    """Seal (sender) or open (receiver) the frames of one direction of one link."""

    def __init__(self, key: bytes, label: bytes):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"sealing key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(bytes(key))
        self._label = bytes(label)

    def _nonce_aad(self, counter: int, index: int, count: int) -> tuple[bytes, bytes]:
        nonce = struct.pack("<IQ", index, counter)
        return nonce, self._label + struct.pack("<QII", counter, index, count)

    def seal(self, counter: int, frames: Sequence) -> list[bytes]:
        """Ciphertext+tag of every frame (bytes-like: bytes, memoryview, numpy array)."""
        count = len(frames)
        if not 0 < count <= _MAX_FRAMES or not 0 <= counter < 2 ** 64:
            raise ValueError("bad frame count or counter")
        out = []
        for i, f in enumerate(frames):
            nonce, aad = self._nonce_aad(counter, i, count)
            out.append(self._aead.encrypt(nonce, _octets(f), aad))
        return out

    def seal_into(self, counter: int, frames: Sequence, out: memoryview) -> list[int]:
        """``seal`` written into ``out`` (each frame's ciphertext+tag after the previous one,
        no other copy); returns their lengths."""
        count = len(frames)
        if not 0 < count <= _MAX_FRAMES or not 0 <= counter < 2 ** 64:
            raise ValueError("bad frame count or counter")
        sizes, pos = [], 0
        for i, f in enumerate(frames):
            data = _octets(f)
            n = len(data) + TAG_BYTES
            nonce, aad = self._nonce_aad(counter, i, count)
            self._aead.encrypt_into(nonce, data, aad, out[pos:pos + n])
            sizes.append(n)
            pos += n
        return sizes

    def open_into(self, counter: int, frames: Sequence[memoryview], out: memoryview) -> list[memoryview]:
        """``open`` written into ``out``: the plaintext frames as views of it, each starting
        16-byte aligned (``out`` needs 16 spare bytes per frame), so arrays read from them
        need no aligning copy."""
        count = len(frames)
        if not 0 < count <= _MAX_FRAMES:
            raise SealError(f"sealed message with {count} frames")
        views, pos = [], 0
        for i, f in enumerate(frames):
            n = len(f) - TAG_BYTES
            if n < 0:
                raise SealError(f"frame {i} of message {counter} is shorter than its tag")
            nonce, aad = self._nonce_aad(counter, i, count)
            dst = out[pos:pos + n]
            try:
                self._aead.decrypt_into(nonce, f, aad, dst)
            except (InvalidTag, ValueError, TypeError):
                raise SealError(f"frame {i} of message {counter} failed authentication") from None
            views.append(dst)
            pos = (pos + n + 15) & ~15
        return views

    def open(self, counter: int, frames: Sequence) -> list[bytes]:
        """Plaintext frames, or SealError if any frame is not what the peer sealed."""
        count = len(frames)
        if not 0 < count <= _MAX_FRAMES:
            raise SealError(f"sealed message with {count} frames")
        out = []
        for i, f in enumerate(frames):
            nonce, aad = self._nonce_aad(counter, i, count)
            try:
                out.append(self._aead.decrypt(nonce, _octets(f), aad))
            except (InvalidTag, ValueError, TypeError):
                raise SealError(f"frame {i} of message {counter} failed authentication") from None
        return out
