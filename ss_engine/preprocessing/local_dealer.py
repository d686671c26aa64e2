"""The local runtime's dealer: ``DealerCore`` behind both parties' links, generating the
runs they announce ahead of them in a thread of its own.

The dealer process does the same for the deployment (``dealer/``); this is its in-process
twin.  A party's link serves one-off items inline (``item``), and takes each replayed
run's blob (``blob``), which the worker thread generated in nonce order from the runs the
party announced, at most ``window`` runs beyond the furthest run a party has begun, into
a ring of reused buffers per plan and party (``window + 3`` deep: what a party received
for the run before stays valid, as ``source`` promises).  A run is generated once for
both parties, and a nonce, once announced with a plan, is bound to it: a second plan for
the same run is refused (``PlanDeviation``), since its items would share keystream.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Sequence

import numpy as np

from ..kernels import serial_kernels
from .expand import DealerCore
from .plan import MaterialPlan, PlanDeviation
from .source import DealerLink
from .specs import Addr, MaterialSpec

__all__ = ["LocalDealer", "LocalDealerLink"]

_IDLE_EXIT = 5.0   # s a worker without work waits before it ends (a new announce restarts it)


class LocalDealer:
    def __init__(self, core: DealerCore, window: int = 2, serial: bool = False):
        if window < 1:
            raise ValueError("the dealer's window is at least one run")
        self.core, self.window, self.serial = core, int(window), bool(serial)
        self._cond = threading.Condition()
        self._pending: dict[int, MaterialPlan] = {}          # announced, not generated yet
        self._ready: dict[int, dict[int, np.ndarray]] = {}   # generated, not taken yet
        self._bound: dict[int, bytes] = {}                   # nonce -> plan digest
        self._at = -1                                        # furthest run a party began
        self._rings: dict[tuple[bytes, int], list] = {}
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.generated = 0
        self.blobs_taken = {0: 0, 1: 0}

    def link(self, rank: int) -> "LocalDealerLink":
        return LocalDealerLink(self, rank)

    # -- what the links call -----------------------------------------------------------------
    def announce(self, at: int, runs: Sequence[tuple[int, MaterialPlan]]) -> None:
        with self._cond:
            for nonce, plan in runs:
                bound = self._bound.get(nonce)
                if bound is not None and bound != plan.digest:
                    raise PlanDeviation(f"run {nonce} was announced with another plan")
                if bound is None and nonce not in self._ready:
                    self._bound[nonce] = plan.digest
                    self._pending[nonce] = plan
            self._at = max(self._at, int(at))
            for old in [n for n in self._bound if n < self._at - 4 * self.window - 8]:
                del self._bound[old]
                self._ready.pop(old, None)
            self._cond.notify_all()
            if self._pending and (self._worker is None or not self._worker.is_alive()):
                self._worker = threading.Thread(target=self._run, name="local-dealer", daemon=True)
                self._worker.start()

    def blob(self, rank: int, nonce: int, plan: MaterialPlan) -> np.ndarray:
        self.announce(nonce, [(nonce, plan)])
        with self._cond:
            while True:
                if self._error is not None:
                    raise RuntimeError(f"the local dealer failed: {self._error}") from self._error
                got = self._ready.get(nonce)
                if got is not None and rank in got:
                    blob = got.pop(rank)
                    self.blobs_taken[rank] += 1
                    if not got:
                        del self._ready[nonce]
                    return blob
                if self._closed:
                    raise RuntimeError("the local dealer is closed")
                if nonce not in self._pending and (self._worker is None or not self._worker.is_alive()):
                    raise RuntimeError(f"the local dealer has no run {nonce} for party {rank}")
                self._cond.wait(1.0)

    # -- the worker --------------------------------------------------------------------------
    def _buffers(self, plan: MaterialPlan) -> dict[int, np.ndarray]:
        """The next buffer of each receiving party's ring for ``plan`` (window + 3 deep)."""
        out = {}
        for rank in (0, 1):
            n = plan.blob_elements[rank]
            if n:
                ring = self._rings.setdefault((plan.digest, rank), [0, []])
                g, bufs = ring
                if len(bufs) < self.window + 3:
                    bufs.append(np.empty(n, np.int64))
                out[rank] = bufs[g % len(bufs)] if len(bufs) == self.window + 3 else bufs[-1]
                ring[0] = g + 1
        return out

    def _run(self) -> None:
        with serial_kernels() if self.serial else nullcontext():
            self._generate()

    def _generate(self) -> None:
        try:
            while True:
                with self._cond:
                    while True:
                        if self._closed:
                            return
                        due = [n for n in self._pending if n <= self._at + self.window]
                        if due:
                            break
                        if not self._cond.wait(_IDLE_EXIT) and not self._pending:
                            return
                    nonce = min(due)
                    plan = self._pending.pop(nonce)
                    out = self._buffers(plan)
                blobs = self.core.step(nonce, plan, out)
                with self._cond:
                    self._ready[nonce] = blobs
                    self.generated += 1
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()


class LocalDealerLink(DealerLink):
    """Party ``rank``'s link to the in-process dealer."""

    def __init__(self, dealer: LocalDealer, rank: int):
        self.dealer, self.rank, self.window = dealer, int(rank), dealer.window

    def item(self, addr: Addr, spec: MaterialSpec) -> dict[str, np.ndarray]:
        return self.dealer.core.item(self.rank, addr, spec)

    def register(self, plan: MaterialPlan) -> None:
        pass   # in process, the announced runs carry their plans

    def announce(self, at: int, runs) -> None:
        self.dealer.announce(at, runs)

    def blob(self, nonce: int, plan: MaterialPlan) -> np.ndarray:
        return self.dealer.blob(self.rank, nonce, plan)
