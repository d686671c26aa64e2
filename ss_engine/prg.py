"""Cryptographic pseudo-random generator: AES-128 in counter mode (the `cryptography` package).

Every mask and share in the engine comes from here.  Seeds come from ``os.urandom`` unless
a test asks for a fixed seed explicitly.  A PRG is a stream: the same (seed, nonce) always
expands to the same bytes, which is what seed compression of dealer material relies on.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["PRG", "CounterStream", "SEED_BYTES", "derive_seed"]

SEED_BYTES = 16
_CHUNK = 1 << 22
_ZEROS = memoryview(bytes(_CHUNK))  # read-only plaintext of the keystream, shared by threads


def derive_seed(key: bytes, *labels: int | str | bytes) -> bytes:
    """Domain-separated sub-seed: SHA-256(key || labels) truncated to 16 bytes."""
    h = hashlib.sha256(key)
    for lab in labels:
        if isinstance(lab, int):
            lab = lab.to_bytes(8, "little", signed=False)
        elif isinstance(lab, str):
            lab = lab.encode()
        h.update(len(lab).to_bytes(4, "little"))
        h.update(lab)
    return h.digest()[:SEED_BYTES]


class PRG:
    """AES-128-CTR keystream.  Not thread-safe: one PRG per thread/party."""

    __slots__ = ("_enc", "seed")

    def __init__(self, seed: bytes, nonce: int = 0):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes")
        self.seed = bytes(seed)
        iv = int(nonce).to_bytes(16, "big")
        self._enc = Cipher(algorithms.AES(self.seed), modes.CTR(iv)).encryptor()

    @classmethod
    def from_os_random(cls) -> "PRG":
        return cls(os.urandom(SEED_BYTES))

    def _fill(self, n: int) -> np.ndarray:
        """n keystream bytes written straight into a fresh array (no intermediate copies)."""
        out = np.empty(n + 16, dtype=np.uint8)  # update_into wants block_size - 1 spare bytes
        view = memoryview(out)
        pos = 0
        while pos < n:
            take = min(n - pos, _CHUNK)
            self._enc.update_into(_ZEROS[:take], view[pos:pos + take + 15])
            pos += take
        return out[:n]

    def random_bytes(self, n: int) -> bytes:
        return self._fill(int(n)).tobytes()

    def random_int64(self, shape) -> np.ndarray:
        """Uniform ring elements of the given shape."""
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        n = math.prod(shape)
        return self._fill(8 * n).view(np.int64).reshape(shape)

    def random_uint64(self, shape) -> np.ndarray:
        return self.random_int64(shape).view(np.uint64)

    def random_bits(self, shape) -> np.ndarray:
        """Uniform bits as int64 0/1."""
        return (self.random_int64(shape) & 1).astype(np.int64)


class CounterStream:
    """Many independent keystreams under one AES key, addressed by a 64-bit nonce.

    Stream ``nonce`` is AES-CTR with the 128-bit big-endian counter starting at
    nonce * 2^64.  Short streams are computed by hand over one long-lived ECB context (a
    new cipher object costs ~45 us, and seed-compressed material expands hundreds of small
    items per training step); long ones use a CTR context, which OpenSSL pipelines about
    ten times faster than ECB.  Both paths give the same bytes.  Thread-safe.
    """

    SMALL = 1 << 16

    def __init__(self, key: bytes):
        if not isinstance(key, (bytes, bytearray)) or len(key) != SEED_BYTES:
            raise ValueError(f"stream key must be {SEED_BYTES} bytes")
        self._key = bytes(key)
        self._ecb = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()
        self._lock = threading.Lock()
        # counter blocks (nonce, i) as big-endian bytes, kept in native uint64 words: column 1
        # (the block index) is filled once, column 0 takes the byte-swapped nonce per call
        self._ctr = np.empty((self.SMALL // 16, 2), dtype=np.uint64)
        self._ctr[:, 1] = np.arange(self.SMALL // 16, dtype=np.uint64).byteswap()

    def keystream(self, nonce: int, nbytes: int) -> np.ndarray:
        """``nbytes`` bytes of stream ``nonce`` as a fresh uint8 array."""
        nbytes = int(nbytes)
        if nbytes > self.SMALL:
            return PRG(self._key, nonce=int(nonce) << 64)._fill(nbytes)
        out = np.empty(nbytes + 31, dtype=np.uint8)
        if nbytes:
            blocks = -(-nbytes // 16)
            nonce_be = int.from_bytes(int(nonce).to_bytes(8, "big"), "little")
            with self._lock:
                ctr = self._ctr[:blocks]
                ctr[:, 0] = nonce_be
                self._ecb.update_into(memoryview(ctr).cast("B"), memoryview(out)[:blocks * 16 + 15])
        return out[:nbytes]
