"""Storage faults and stale uploads through the three real processes (issue 10): a flipped
bit or a truncated checkpoint never resumes into a wrong model, a corrupt job record is
quarantined and the server starts anyway, a job left "uploading" expires across restarts.

One deployment serves the module (upload_expiry 4 s; checkpoints every 3 steps)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from client.session import ClientSession
from client.train import train_remote
from ss_engine.comm import ChannelTimeout
from ss_engine.net.zmq_channel import RpcError
from ss_engine.request import TrainRequest

from .test_deploy_helpers import SEED, local_reference, ring_sum, start

EXPIRY = 4.0


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = start(tmp_path_factory.mktemp("storage"), upload_expiry=EXPIRY)
    try:
        yield d
    finally:
        d.stop()
        assert not any(h.alive() for h in d.handles.values())


def _jobdir(dep, rank: int, job: str):
    return dep.config.path(dep.config.servers[rank].data_dir) / "jobs" / job


def _flip_bit(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_corrupt_newest_checkpoints_resume_from_newest_both_hold_intact(dep):
    """Both servers die mid-run; server 0's newest checkpoint gets one flipped bit in its
    payload, server 1's newest is truncated.  The run resumes from the newest checkpoint
    both hold intact and ends with the uninterrupted run's model, bit for bit."""
    n, bs = 192, 16   # 12 steps, checkpoints at 3, 6, 9, 12
    out, errs = {}, []

    def run():
        try:
            out["r"] = train_remote(dep.config, TrainRequest.build(
                dataset="mnist-small", train_limit=n, test_limit=10, batch_size=bs, secure_eval=0,
                progress=False), test_seed=SEED, job="ckjob", timeout=150, keep_job=True)
        except BaseException as exc:  # noqa: BLE001
            errs.append(exc)
    th = threading.Thread(target=run)
    th.start()
    with ClientSession(dep.config, timeout=10) as s:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                st = s.status("ckjob", timeout=2)
                if min(h["step"] for h, _ in st) >= 7:
                    break
            except (RpcError, ChannelTimeout):
                pass
            time.sleep(0.05)
    for name in ("server0", "server1"):
        dep.handles[name].kill9()
    steps = [sorted(int(p.stem[5:]) for p in _jobdir(dep, r, "ckjob").glob("ckpt-*.bin")) for r in (0, 1)]
    assert all(len(s) >= 2 for s in steps), steps   # an older intact one is on disk
    newest0 = _jobdir(dep, 0, "ckjob") / f"ckpt-{steps[0][-1]:09d}.bin"
    _flip_bit(newest0, newest0.stat().st_size - 1000)   # a bit of a parameter share
    newest1 = _jobdir(dep, 1, "ckjob") / f"ckpt-{steps[1][-1]:09d}.bin"
    newest1.write_bytes(newest1.read_bytes()[:newest1.stat().st_size // 2])
    for name in ("server0", "server1"):
        dep.restart(name)   # (already dead: just started again)
    th.join(150)
    assert not th.is_alive() and not errs, errs
    with ClientSession(dep.config) as s:
        r0, r1 = s.fetch("ckjob")
        s.delete("ckjob")
    ref = local_reference(n, bs)
    got = ring_sum(r0, r1)
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k
    resumed = [int(ln.rsplit(" ", 1)[-1]) for name in ("server0", "server1")
               for ln in dep.handles[name].log.read_text().splitlines() if "resuming from step" in ln]
    both_intact = max(set(steps[0][:-1]) & set(steps[1][:-1]))
    assert resumed and max(resumed) == both_intact, (resumed, steps)
    for name in ("server0", "server1"):
        assert "checkpoint set aside" in dep.handles[name].log.read_text()


def test_corrupt_job_record_is_quarantined_and_the_server_starts(dep):
    with ClientSession(dep.config) as s:
        s.create("victim")
        s.create("healthy")
    dep.handles["server1"].stop()
    record = _jobdir(dep, 1, "victim") / "job.bin"
    _flip_bit(record, 20)    # one corrupt byte in the record
    dep.restart("server1")   # main: server 1 did not start at all
    with ClientSession(dep.config) as s:
        st = [h for h, _ in s.status("victim")]
        assert st[0]["state"] == "uploading"
        assert st[1]["state"] == "quarantined" and "checksum" in st[1]["message"], st[1]
        assert "/" not in st[1]["message"].split("(", 1)[1]   # no server paths in the reason
        assert [h["state"] for h, _ in s.status("healthy")] == ["uploading", "uploading"]
        with pytest.raises(RpcError, match="quarantined"):
            s.rpc[1].request({"type": "create", "job": "victim", "owners": []})
        s.delete("healthy")
        s.rpc[0].request({"type": "delete", "job": "victim"})


def test_stale_upload_expires_and_the_limit_survives_a_restart(dep):
    with ClientSession(dep.config) as s:
        s.create("stale", owners=["client"])
        s.upload("stale", "data/p/x", np.zeros((1, 784), np.int64), np.zeros((1, 784), np.int64))
    dep.restart("server1")   # the job's age is on disk, not in the process
    deadline = time.monotonic() + EXPIRY + 10
    with ClientSession(dep.config) as s:
        while time.monotonic() < deadline and any(j["job"] == "stale" for js in s.jobs() for j in js):
            time.sleep(0.2)
        assert not any(j["job"] == "stale" for js in s.jobs() for j in js)
        with pytest.raises(RpcError, match="unknown job"):
            s.status("stale")
    assert not _jobdir(dep, 0, "stale").exists() and not _jobdir(dep, 1, "stale").exists()
