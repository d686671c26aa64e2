"""Tell the dealer when a job instance ended, so it forgets the instance's keys.

A job that is done, failed or deleted needs no more correlated randomness; the dealer
deletes the instance's keys when a server says so and never serves the instance again.
The store keeps the instances still to announce (``releases.bin``), so a dealer that is
down, or a server that restarts meanwhile, only delays the release: this thread retries
every few seconds until the dealer confirms.
"""
from __future__ import annotations

import logging
import threading

from ss_engine.comm import ChannelClosed, ChannelTimeout
from ss_engine.net.dealer_link import RemoteDealerLink
from ss_engine.net.zmq_channel import CurveContext

from .store import JobStore

__all__ = ["DealerReleases"]

log = logging.getLogger("ss_engine.server")
RETRY_SECONDS = 5.0
_ANSWER_WITHIN = 5.0


class DealerReleases(threading.Thread):
    def __init__(self, store: JobStore, curve: CurveContext, endpoint: str, dealer_public: bytes,
                 stop: threading.Event):
        super().__init__(name="dealer-releases", daemon=True)
        self.store, self.curve, self.endpoint, self.dealer_public = store, curve, endpoint, dealer_public
        self.stop_event = stop

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.store.releases_changed.clear()
            for job, nonce in self.store.pending_releases():
                if self.stop_event.is_set() or not self._release(job, nonce):
                    break   # the dealer is away: try again later
            self.store.releases_changed.wait(RETRY_SECONDS)

    def _release(self, job: str, nonce: bytes) -> bool:
        link = RemoteDealerLink(self.curve, self.endpoint, self.dealer_public, job, nonce,
                                timeout=_ANSWER_WITHIN)
        try:
            link.release()
        except (ChannelClosed, ChannelTimeout) as exc:
            log.info("job %s: dealer release pending (%s)", job, str(exc)[:160])
            return False
        finally:
            link.close()
        self.store.release_done(job, nonce)
        log.info("job %s: the dealer forgot this instance's keys", job)
        return True
