"""``LocalSession``: two party threads and an in-process dealer that live for the session.

The parties are the local runtime's (``simulate.LocalRuntime``: in-memory channels, the
dealer's generator in process); each thread holds its party's values and runs every batch
with ``dispatch.PartySession`` on its own scheduler, exactly what a server's session runner
runs.  The caller's thread only encodes, shares, queues ops and adds revealed shares.
"""
from __future__ import annotations

import queue
import threading

from ..comm import ChannelClosed
from ..config import EngineConfig, FixedPointConfig
from ..dispatch import OpError, PartySession, SessionLimits
from ..protocols.rounds import run as run_coroutine
from ..simulate import LocalRuntime
from .core import Session, SessionFailed, check_seed, input_prg

__all__ = ["LocalSession"]


class _PartyThread(threading.Thread):
    """One party.  A batch in two steps, so that both parties run it or neither does: it
    is parsed and checked (answer "parsed" or "refused"), then run ("ok" with the shares
    of the revealed values, or "failed") or dropped, as the caller decides from both
    answers.  (The servers agree the same way, in one round between them.)"""

    def __init__(self, state: PartySession):
        super().__init__(name=f"session-party{state.ctx.rank}", daemon=True)
        self.state = state
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()

    def run(self) -> None:
        st = self.state
        while True:
            item = self.inbox.get()
            if item is None:
                break
            header, arrays = item
            try:
                batch = st.parse(header, arrays)
            except OpError as exc:
                self.outbox.put(("refused", str(exc)))
                continue
            self.outbox.put(("parsed", None))
            if self.inbox.get() != "run":     # the other party refused it: drop it too
                continue
            try:
                self.outbox.put(("ok", run_coroutine(st.ctx, st.run(batch, arrays))))
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                st.ctx.channel.close()    # the peer must not wait for us
                self.outbox.put(("failed", f"party {st.ctx.rank}: {type(exc).__name__}: {exc}",
                                 isinstance(exc, ChannelClosed)))
                break
        st.clear()


class LocalSession(Session):
    """A session in this process: ``with sse.LocalSession() as s: x = s.share(...)``.

    ``frac_bits``: the fixed-point scale f (12..24 tested).  ``seed`` (16 bytes, tests
    only) fixes the dealer keys and the sharing randomness, as ``LocalRuntime(seed=...)``
    does; by default every key comes from os.urandom.  ``timeout``: seconds a party waits
    for its peer before the session fails.
    """

    def __init__(self, frac_bits: int = 16, *, seed: bytes | None = None,
                 config: EngineConfig | None = None, limits: SessionLimits | None = None,
                 timeout: float = 600.0):
        config = config or EngineConfig(fixed=FixedPointConfig(frac_bits=frac_bits))
        limits = limits or SessionLimits()
        self._runtime = LocalRuntime(config, seed=check_seed(seed), timeout=timeout)
        super().__init__(config, input_prg(seed), limits)
        self._parties = [_PartyThread(PartySession(ctx, limits)) for ctx in self._runtime.contexts]
        for p in self._parties:
            p.start()

    def _execute(self, header: dict, arrays0: list, arrays1: list) -> tuple[list, list]:
        for p, arrays in zip(self._parties, (arrays0, arrays1)):
            p.inbox.put((header, arrays))
        parsed = [p.outbox.get() for p in self._parties]
        refused = [msg for kind, msg in parsed if kind == "refused"]
        for p, (kind, _) in zip(self._parties, parsed):
            if kind == "parsed":
                p.inbox.put("drop" if refused else "run")
        if refused:
            raise OpError(refused[0])
        got = [p.outbox.get() for p in self._parties]
        failed = [g for g in got if g[0] == "failed"]
        if failed:
            # the root cause, not the peer's "channel closed"
            first = next((g for g in failed if not g[2]), failed[0])
            raise SessionFailed(first[1])
        return got[0][1], got[1][1]

    def _shutdown(self) -> None:
        for p in self._parties:
            if p.is_alive():
                p.inbox.put(None)
        for p in self._parties:
            p.join(30)
        for ctx in self._runtime.contexts:
            ctx.channel.close()

    def stats(self) -> dict:
        """Each party's channel counters (rounds, bytes) and dealer counters so far."""
        return self._runtime.stats()
