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
_CHUNK = 1 << 20   # plaintext zeros per update call: full speed, and stays in cache
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
    """One AES-128-CTR keystream under one key, addressed by its 128-bit block counter.

    Block ``b`` of the stream is AES_key(b), ``b`` as 16 big-endian bytes: ``fill(b, buf, start,
    stop)`` writes the bytes from block ``b`` on into ``buf[start:stop]`` (one CTR context, one
    call however long the range is).  The engine's material addresses blocks as ``nonce << 64 | block``: every run
    owns one nonce, and its items are slices of that nonce's blocks
    (``preprocessing.plan``).  Short fills are computed by hand over one long-lived ECB
    context (a new cipher object costs ~15 us, and a one-off run fetches many small items);
    long ones use a CTR context (6 GB/s here).  Both paths give the same bytes.  A fill may
    not carry from the low 64 bits of the counter into the nonce.  Thread-safe.
    """

    SMALL = 1 << 16

    def __init__(self, key: bytes):
        if not isinstance(key, (bytes, bytearray)) or len(key) != SEED_BYTES:
            raise ValueError(f"stream key must be {SEED_BYTES} bytes")
        self._key = bytes(key)
        self._ecb = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()
        self._lock = threading.Lock()
        # counter blocks (hi, lo + i) as big-endian bytes, kept in native uint64 words:
        # column 1 (the block index) is refilled per call, column 0 takes the nonce
        self._ctr = np.empty((self.SMALL // 16, 2), dtype=np.uint64)
        self._steps = np.arange(self.SMALL // 16, dtype=np.uint64)
        self._tail = memoryview(bytearray(32))

    def fill(self, counter: int, buf: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Write the stream from block ``counter`` on into ``buf[start:stop]``; ``buf`` is a
        1-D contiguous uint8 array with 15 bytes beyond ``stop`` (the cipher's contract; they
        are not touched).  Returns ``buf[start:stop]``."""
        stop = buf.size - 15 if stop is None else int(stop)
        nbytes = stop - start
        if buf.dtype != np.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous or stop + 15 > buf.size \
                or nbytes < 0:
            raise ValueError("keystream fills need a contiguous uint8 buffer with 15 spare bytes")
        if not nbytes:
            return buf[start:stop]
        counter = int(counter)
        blocks = -(-nbytes // 16)
        hi, lo = counter >> 64, counter & _LOW64
        if not 0 <= hi < 1 << 64 or lo + blocks > 1 << 64:
            raise ValueError("a keystream fill may not leave its nonce")
        view = memoryview(buf)
        if nbytes > self.SMALL:
            enc = Cipher(algorithms.AES(self._key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
            pos = start
            while pos < stop:
                take = min(stop - pos, _CHUNK)
                enc.update_into(_ZEROS[:take], view[pos:pos + take + 15])
                pos += take
            return buf[start:stop]
        with self._lock:
            ctr = self._ctr[:blocks]
            ctr[:, 0] = int.from_bytes(hi.to_bytes(8, "big"), "little")
            np.add(self._steps[:blocks], np.uint64(lo), out=ctr[:, 1])
            ctr[:, 1].byteswap(inplace=True)
            raw = memoryview(ctr).cast("B")
            whole = nbytes & ~15
            if whole:
                self._ecb.update_into(raw[:whole], view[start:start + whole + 15])
            if whole < nbytes:   # a partial last block: through scratch, so nothing past stop moves
                tail = self._tail
                self._ecb.update_into(raw[whole:whole + 16], tail)
                view[start + whole:stop] = tail[:nbytes - whole]
        return buf[start:stop]

    def keystream(self, counter: int, nbytes: int) -> np.ndarray:
        """``nbytes`` bytes of the stream from block ``counter`` on, as a fresh uint8 array."""
        nbytes = int(nbytes)
        return self.fill(counter, np.empty(nbytes + 15, dtype=np.uint8), 0, nbytes)


_LOW64 = (1 << 64) - 1
