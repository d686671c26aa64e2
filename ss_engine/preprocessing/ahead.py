"""The in-process dealer, running up to ``lead_steps`` training steps ahead in its own thread.

The dealer process does this for the deployment (``dealer/``, ``window_steps``); this is
the local runtime's twin.  At each step boundary the party calls ``step_done(next_seq)``;
the link predicts that the next steps ask for this step's specs shifted by one, two, ...
step lengths (``shift_spec``) and a worker thread generates those corrections while the
parties compute.  Two steps of lead (the default) let the next step's first items be ready
when it starts: with one, the worker only began them at the boundary and party 1 waited
for the first products (~10% of a step once steps took ~80 ms).  A request that was not
predicted, or predicted with another spec, is generated inline: prediction can only save
time, never change a result.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

from .expand import DealerCore
from .source import CorrectionLink
from .specs import MaterialSpec, shift_spec

__all__ = ["AheadDealerLink"]


class AheadDealerLink(CorrectionLink):
    def __init__(self, core: DealerCore, start_seq: int = 0, lead_steps: int = 2):
        if lead_steps < 1:
            raise ValueError("lead_steps must be at least 1")
        self.core = core
        self.lead_steps = int(lead_steps)
        self._cond = threading.Condition()
        self._ready: dict[int, tuple[MaterialSpec, dict]] = {}
        self._pending: set[int] = set()
        self._plans: deque = deque()
        self._log: list[tuple[int, MaterialSpec]] = []
        self._base: int | None = int(start_seq)  # where the party's first step starts
        self._worker: threading.Thread | None = None
        self._closed = False
        self.hits = self.misses = 0

    def corrections(self, seq: int, spec: MaterialSpec) -> dict[str, np.ndarray]:
        with self._cond:
            self._log.append((seq, spec))
            while seq in self._pending and not self._closed:
                self._cond.wait()
            hit = self._ready.pop(seq, None)
        if hit is not None and hit[0] == spec:
            self.hits += 1
            return hit[1]
        self.misses += 1
        return self.core.corrections(seq, spec)

    def step_done(self, next_seq: int) -> None:
        """A step ended: queue the predicted steps up to ``lead_steps`` ahead."""
        with self._cond:
            log, base = self._log, self._base
            self._log, self._base = [], int(next_seq)
            for s in [s for s in self._ready if s < next_seq]:
                del self._ready[s]
            if base is None or not log or self._closed:
                return
            period = int(next_seq) - base
            plan = [(s + j * period, shift_spec(sp, j * period, base))
                    for j in range(1, self.lead_steps + 1) for s, sp in log
                    if s + j * period not in self._pending and s + j * period not in self._ready]
            if not plan:
                return
            self._pending.update(s for s, _ in plan)
            self._plans.append(plan)
            self._cond.notify_all()
        if self._worker is None or not self._worker.is_alive():  # first step, or a worker died
            self._worker = threading.Thread(target=self._run, name="dealer-ahead", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._plans and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    plan = self._plans.popleft()
                for seq, spec in plan:
                    if self._closed:
                        return
                    corr = self.core.corrections(seq, spec)
                    with self._cond:
                        self._ready[seq] = (spec, corr)
                        self._pending.discard(seq)
                        self._cond.notify_all()
        finally:  # whatever happened, nobody may wait for an item that will not come
            with self._cond:
                self._pending.clear()
                self._plans.clear()
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()
