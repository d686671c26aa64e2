"""The job runner: agree with the peer on a job and a checkpoint, then run the SPMD code.

Loop (one thread per server):
  1. jobs in state queued/waiting are *ready*; none -> sleep.
  2. open a fresh peer session, exchanging {ready: {job: digest}, ckpts: {job: [steps]}};
     both sides pick the same job (the smallest id ready on both with equal digests) and
     resume from the largest checkpoint step both hold (0: from the uploaded inputs).
  3. fetch this party's key from the dealer, build PartyContext(rank, channel, source,
     config) and call ``train_party`` / ``predict_party`` — the very functions the local
     runtime runs.  Checkpoints every ``checkpoint_every`` steps and at epoch ends.
  4. one final exchange confirms both finished; then the result is stored.

A dead peer or dealer (ChannelClosed/ChannelTimeout) sends the job back to *waiting*; it
fails only after ``peer_wait_limit`` seconds without progress.  An error that would repeat
(bad job, bug, a data directory that refuses reads or writes) fails the job on both
servers: the peer is told via the session's "bye".  No error ends the runner thread, and
the error paths never raise: a state the disk refuses to store still holds in memory, and
``status`` shows it with the reason.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ss_engine.comm import ChannelClosed, ChannelTimeout
from ss_engine.net.dealer_link import RemoteDealerLink
from ss_engine.net.zmq_channel import CurveContext, ZmqPeerChannel
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.nn.models import param_names
from ss_engine.party import PartyContext
from ss_engine.preprocessing.source import SeededSource
from ss_engine.job import TrainJob, steps_per_epoch
from ss_engine.training import PartyState, predict_party, train_party

from .session import run_session
from .store import CheckpointCorrupt, JobRecord, JobStore

__all__ = ["JobRunner", "Live", "FATAL"]

log = logging.getLogger("ss_engine.server")
FATAL = "fatal: "


@dataclass
class Live:
    """What the client's status request shows while a job runs (in memory only).

    The figures add up over every session of the job this process ran (a resume after a
    restart re-runs the steps since the checkpoint): ``steps_run`` steps took ``seconds``
    and moved ``channel`` (this party's peer traffic) and ``dealer`` (its dealer link), so
    per-step figures are those divided by ``steps_run``."""

    step: int = 0
    epoch: int = 0
    waiting_since: float | None = None
    losses: deque = field(default_factory=lambda: deque(maxlen=100_000))  # (step, p_y share)
    channel: dict = field(default_factory=dict)
    dealer: dict = field(default_factory=dict)
    seconds: float = 0.0
    steps_run: int = 0
    # each session's first WARM_STEPS steps (warm-up: kernels load; the first step records
    # the step's plan, the second waits for the dealer's first blob of it)
    warmup_seconds: float | None = None       # their time, summed over sessions
    warmup_steps: int = 0                     # their number, summed over sessions
    warmup_end_step: int = 0                  # the step count at the latest warm-up's end


#: steps of a session that the steady-state figures leave out
WARM_STEPS = 2
#: dealer-link figures that describe a session rather than add up over sessions
_PER_SESSION = ("data_plane",)


def _added(total: dict, session: dict) -> dict:
    return {k: v if k in _PER_SESSION else total.get(k, 0) + v for k, v in session.items()}


class _Fatal(Exception):
    pass


class JobRunner(threading.Thread):
    def __init__(self, rank: int, cfg, store: JobStore, curve: CurveContext, peer_public: bytes,
                 dealer_public: bytes, live: dict, stop: threading.Event, desk=None):
        super().__init__(name=f"runner{rank}", daemon=True)
        self.rank, self.cfg, self.store, self.curve = rank, cfg, store, curve
        self.peer_public, self.dealer_public = peer_public, dealer_public
        self.live, self.stop_event = live, stop
        self.desk = desk                      # servers.session.SessionDesk: live sessions
        self.wake = threading.Event()
        self.endpoint = cfg.peer_bind if rank == 0 else cfg.peer_connect
        self._current: JobRecord | None = None

    # -- bookkeeping ----------------------------------------------------------------------
    def _save(self, rec: JobRecord, state: str, message: str = "") -> None:
        """A job's new state: in memory at once (``status`` shows it), then on disk; OSError
        if the disk refuses (the caller fails the job)."""
        with self.store.lock:
            rec.state, rec.message = state, message
            self.store.save(rec)

    def _set(self, rec: JobRecord, state: str, message: str = "") -> None:
        """:meth:`_save` for waiting and error paths: never raises.  If the disk refuses,
        the state still holds in memory and its message says it could not be stored."""
        try:
            self._save(rec, state, message)
        except OSError as exc:
            log.error("job %s: state %r not stored: %s", rec.job, state, exc)
            why = _storage_error(exc)
            rec.message = f"{message} (not stored)" if why in message else f"{message} (not stored: {why})"

    def _ready(self) -> dict[str, JobRecord]:
        with self.store.lock:
            return {j: r for j, r in self.store.jobs.items() if r.state in ("queued", "waiting")}

    def _note_wait(self, ready: dict, why: str) -> None:
        now = time.monotonic()
        for rec in ready.values():
            lv = self.live.setdefault(rec.job, Live())
            if lv.waiting_since is None:
                lv.waiting_since = now
            if now - lv.waiting_since > self.cfg.peer_wait_limit:
                self._set(rec, "failed", f"{why} for more than {self.cfg.peer_wait_limit:.0f} s; giving up")
            elif rec.state != "waiting" or not rec.message.startswith(why):
                self._set(rec, "waiting", why)

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._round()
            except Exception:  # noqa: BLE001 - nothing may end the runner: later jobs need it
                log.exception("runner")
                self.stop_event.wait(1.0)

    def _round(self) -> None:
        """Finish what needs no peer, then one session with the peer for one job."""
        ready = self._ready()
        self._finish_local(ready)
        ready = self._ready()
        if not ready:
            self.wake.wait(0.5)
            self.wake.clear()
            return
        try:
            ch = ZmqPeerChannel(self.curve, self.rank, self.endpoint, self.peer_public,
                                timeout=self.cfg.peer_timeout, bulk=self.cfg.peer_bulk_cipher)
        except OSError as exc:   # e.g. the peer port is taken, or no descriptors left
            self._note_wait(ready, f"cannot open the peer channel ({str(exc)[:160]})")
            self.stop_event.wait(1.0)
            return
        try:
            meta = ch.open({"ready": {j: r.digest for j, r in ready.items()},
                            "ckpts": {j: self.store.checkpoint_steps(j) for j in ready}},
                           timeout=3.0)
            job, step = self._agree(ready, meta)
            if job is None:
                ch.close("nothing in common")
                self._note_wait(ready, f"waiting for server {1 - self.rank} to get the job")
                self.stop_event.wait(0.5)
                return
            self._run_job(ready[job], step, ch)
        except (ChannelClosed, ChannelTimeout) as exc:
            if str(exc).find(FATAL) >= 0:
                self._fail_current(ready, str(exc))
            else:
                self._note_wait(ready, _waiting_message(exc, self.rank))
        except CheckpointCorrupt as exc:   # set aside: the next session agrees on an older one
            self._note_wait(ready, f"a checkpoint failed its checksum ({str(exc)[-80:]}); "
                                   f"resuming from an older one")
        except _Fatal as exc:
            self._fail_current(ready, f"{FATAL}{exc}")
            ch.close(f"{FATAL}{exc}")
        except OSError as exc:   # the data directory refused a read or a write
            why = f"server {self.rank}: {_storage_error(exc)}"
            log.error("job %s: %s", self._current.job if self._current else "-", why)
            if self._current is None:   # before any job was chosen: each ready job waits
                self._note_wait(ready, why)
            self._fail_current(ready, f"{FATAL}{why}")
            ch.close(f"{FATAL}{why}")
        except Exception as exc:  # noqa: BLE001 - a bug fails the job, never the server
            log.exception("runner")
            if self._current is not None:
                self._set(self._current, "failed", f"internal error: {type(exc).__name__}: {exc}")
            ch.close(f"{FATAL}server {self.rank}: {type(exc).__name__}: {exc}")
        finally:
            self._current = None
            ch.close()

    def _fail_current(self, ready: dict, message: str) -> None:
        if self._current is not None:
            self._set(self._current, "failed", message[message.find(FATAL) + len(FATAL):])

    def _agree(self, ready: dict, meta: dict) -> tuple[str | None, int]:
        theirs = meta.get("ready") if isinstance(meta.get("ready"), dict) else {}
        for j in sorted(set(ready) & set(theirs)):
            if theirs[j] != ready[j].digest:
                self._set(ready[j], "failed", "the two servers hold different inputs or settings "
                                              "for this job (digest mismatch)")
        common = sorted(j for j in ready if theirs.get(j) == ready[j].digest)
        if not common:
            return None, 0
        job = common[0]
        ck = meta.get("ckpts", {}).get(job, []) if isinstance(meta.get("ckpts"), dict) else []
        mine = set(self.store.checkpoint_steps(job))
        both = mine & {s for s in ck if isinstance(s, int)}
        return job, max(both, default=0)

    def _finish_local(self, ready: dict) -> None:
        """A job whose final checkpoint is here needs no peer: store the result."""
        for rec in ready.values():
            if rec.kind == "train" and rec.total_steps and \
                    rec.total_steps in self.store.checkpoint_steps(rec.job):
                try:
                    st = self.store.load_checkpoint(rec.job, rec.total_steps)
                    self.store.save_result(rec.job, st.params)
                except CheckpointCorrupt:
                    continue   # set aside: the job resumes with the peer from an older one
                except OSError as exc:
                    self._set(rec, "failed", f"server {self.rank}: {_storage_error(exc)}")
                    continue
                lv = self.live.setdefault(rec.job, Live())
                lv.step = rec.total_steps
                self._set(rec, "done", "finished")

    # -- one job --------------------------------------------------------------------------
    def _run_job(self, rec: JobRecord, step: int, ch: ZmqPeerChannel) -> None:
        self._current = rec
        # both chose the same (job, step)? one round to be sure before any state is touched
        tag = np.frombuffer(bytes.fromhex(rec.digest)[:8], np.int64).copy()
        got = ch.exchange([np.concatenate([tag, [step]])], label="agree")[0]
        if not np.array_equal(got, np.concatenate([tag, [step]])):
            raise ChannelClosed("servers disagree on the job or checkpoint to resume")
        lv = self.live.setdefault(rec.job, Live())
        lv.waiting_since = None
        log.info("job %s: %s", rec.job, f"resuming from step {step}" if step else "starting")
        link = RemoteDealerLink(self.curve, self.cfg.dealer.connect, self.dealer_public, rec.job,
                                rec.nonce, timeout=self.cfg.dealer_timeout,
                                window=self.cfg.dealer.window_steps)
        dealer_before = dict(lv.dealer)
        try:
            key = link.open(rec.digest, rec.test_seed)
            config = EngineConfig(fixed=FixedPointConfig(frac_bits=rec.frac_bits))
            if rec.kind == "train":
                self._train(rec, step, ch, link, key, config, lv)
            elif rec.kind == "session":
                run_session(self, rec, ch, link, key, config, lv)
            else:
                self._predict(rec, ch, link, key, config, lv)
        finally:
            lv.dealer = _added(dealer_before, link.stats.as_dict())
            link.close()

    def _train(self, rec, step, ch, link, key, config, lv) -> None:
        job = TrainJob.from_dict(rec.train)
        x = np.concatenate([self.store.load_tensor(rec.job, f"data/{p}/x") for p in rec.parts])
        y = np.concatenate([self.store.load_tensor(rec.job, f"data/{p}/y") for p in rec.parts])
        if step:
            state = self.store.load_checkpoint(rec.job, step)
        else:
            state = PartyState({n: np.array(self.store.load_tensor(rec.job, f"param/{n}")[0])
                                for n in param_names(job.model)})
        source = SeededSource(self.rank, key, link, start_seq=state.source_seq)
        ctx = PartyContext(self.rank, ch, source, config)
        spe = steps_per_epoch(len(x), job.batch_size)
        every = self.cfg.checkpoint_every
        self._save(rec, "running", f"resumed from step {step}" if step else "running")
        lv.step = step
        t0, stats0 = time.monotonic(), ch.stats.snapshot()
        before = (dict(lv.channel), lv.seconds, lv.steps_run, lv.warmup_seconds or 0.0)
        warm = [False]

        def on_step(s, epoch, st, py):
            lv.step, lv.epoch = s + 1, epoch
            if py is not None:
                lv.losses.append((s, np.asarray(py).copy()))
            if st.step % every == 0 or st.step % spe == 0:
                self.store.save_checkpoint(rec.job, st)
            if st.step % spe == 0:
                log.info("job %s: epoch %d/%d done (step %d/%d, %.1f s since %s)", rec.job,
                         st.step // spe, job.epochs, st.step, rec.total_steps,
                         time.monotonic() - t0, f"step {step}" if step else "start")
            lv.channel = _added(before[0], ch.stats.minus(stats0).as_dict())
            session = time.monotonic() - t0
            lv.seconds, lv.steps_run = before[1] + session, before[2] + s + 1 - step
            if not warm[0] and s + 1 - step >= WARM_STEPS:
                warm[0] = True
                lv.warmup_seconds, lv.warmup_end_step = before[3] + session, s + 1
                lv.warmup_steps += WARM_STEPS
            if self.stop_event.is_set():
                raise ChannelClosed("server shutting down")
        train_party(ctx, x, y, job, state, on_step)
        ch.exchange([np.array([state.step], np.int64)], label="finish")
        self.store.save_result(rec.job, state.params)
        self._set(rec, "done", "finished")

    def _predict(self, rec, ch, link, key, config, lv) -> None:
        job = TrainJob.from_dict(rec.train)
        model = job.model
        if rec.model_job:
            names, arrays = self.store.load_result(rec.model_job)
            params = dict(zip(names, (np.array(a) for a in arrays)))
        else:
            params = {n: np.array(self.store.load_tensor(rec.job, f"param/{n}")[0])
                      for n in param_names(model)}
        x = self.store.load_tensor(rec.job, "input/x")
        source = SeededSource(self.rank, key, link)
        ctx = PartyContext(self.rank, ch, source, config)
        self._save(rec, "running", "predicting")
        t0 = time.monotonic()
        out = predict_party(ctx, model, params, x, task=job.task)
        lv.seconds = time.monotonic() - t0
        lv.step = lv.steps_run = 1
        ch.exchange([np.array([len(out)], np.int64)], label="finish")
        name = "onehot" if job.task == "classification" else "outputs"
        self.store.save_result(rec.job, {name: np.asarray(out, np.int64)})
        self._set(rec, "done", "finished")


def _storage_error(exc: OSError) -> str:
    """One line: what the disk said and about which file."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"storage error: {exc.strerror or exc}{where}"


def _waiting_message(exc: Exception, rank: int) -> str:
    s = str(exc)
    if "dealer" in s:
        return f"waiting for the dealer ({s[:160]})"
    return f"waiting for server {1 - rank} ({s[:160]})"
