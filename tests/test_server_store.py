"""A server's store in one process: every stored file is verified on load (issue 10), and
what quotas and dealer releases depend on survives a restart."""
from __future__ import annotations

import os

import numpy as np
import pytest

from servers.store import CheckpointCorrupt, JobStore
from ss_engine.net.wire import StoredFileError
from ss_engine.training import PartyState


def _flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _store_with_tensor(tmp_path, rows=6):
    st = JobStore(tmp_path)
    st.create("j", "trainer", ["owner"], b"n" * 16)
    x = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)
    for off in range(0, rows, 4):   # two chunks: the CRC runs across them
        st.append_rows("j", "data/p/x", off, rows, (3,), x[off:off + 4], "owner")
    return st, x


def test_tensor_rows_are_checked_across_chunks_and_restarts(tmp_path):
    st, x = _store_with_tensor(tmp_path)
    assert np.array_equal(JobStore(tmp_path).load_tensor("j", "data/p/x"), x)
    path = tmp_path / "jobs" / "j" / "t" / "data__p__x.bin"
    _flip(path, 17)
    with pytest.raises(StoredFileError, match="checksum"):
        JobStore(tmp_path).load_tensor("j", "data/p/x")
    path.write_bytes(x.tobytes()[:-8])
    with pytest.raises(StoredFileError, match="short"):
        JobStore(tmp_path).load_tensor("j", "data/p/x")


def _state(step):
    return PartyState({"w": np.full(5, step, np.int64)}, {"w": np.zeros(5, np.int64)}, step, 0.1, 7 * step)


def test_only_intact_checkpoints_are_offered_and_a_bad_one_is_set_aside(tmp_path):
    st = JobStore(tmp_path)
    st.create("j", "trainer", [], b"n" * 16)
    for step in (3, 6, 9):
        st.save_checkpoint("j", _state(step))
    assert st.checkpoint_steps("j") == [3, 6, 9]
    d = tmp_path / "jobs" / "j"
    _flip(d / "ckpt-000000009.bin", 60)                                  # one bit of the payload
    (d / "ckpt-000000006.bin").write_bytes((d / "ckpt-000000006.bin").read_bytes()[:50])  # truncated
    assert st.checkpoint_steps("j") == [3]
    assert sorted(p.name for p in d.glob("ckpt-*")) == [
        "ckpt-000000003.bin", "ckpt-000000006.bin.corrupt", "ckpt-000000009.bin.corrupt"]
    assert st.load_checkpoint("j", 3).params["w"][0] == 3
    # one that turns bad after it was listed fails at load, and is set aside then
    _flip(d / "ckpt-000000003.bin", 60)
    with pytest.raises(CheckpointCorrupt):
        st.load_checkpoint("j", 3)
    assert st.checkpoint_steps("j") == []


def test_a_corrupt_record_or_meta_quarantines_that_job_only(tmp_path):
    st, _ = _store_with_tensor(tmp_path)
    st.create("k", "trainer", [], b"m" * 16)
    st.create("l", "trainer", [], b"o" * 16)
    _flip(tmp_path / "jobs" / "j" / "job.bin", 30)
    _flip(tmp_path / "jobs" / "k" / "job.bin", os.path.getsize(tmp_path / "jobs" / "k" / "job.bin") - 1)
    again = JobStore(tmp_path)
    assert set(again.jobs) == {"l"} and set(again.quarantined) == {"j", "k"}
    assert "checksum" in again.quarantined["j"] and str(tmp_path) not in again.quarantined["j"]
    st2 = JobStore(tmp_path / "other")
    st2.create("m", "trainer", ["owner"], b"n" * 16)
    st2.append_rows("m", "data/p/x", 0, 2, (3,), np.zeros((2, 3), np.int64), "owner")
    _flip(tmp_path / "other" / "jobs" / "m" / "t" / "data__p__x.meta", 25)
    assert set(JobStore(tmp_path / "other").quarantined) == {"m"}


def test_quotas_and_pending_releases_survive_a_restart(tmp_path):
    st, x = _store_with_tensor(tmp_path)
    assert st.jobs_of("trainer")[0].job == "j" and st.bytes_of("owner") == x.nbytes
    rec = st.jobs["j"]
    rec.nonce, rec.state = b"N" * 32, "done"
    st.save(rec)
    again = JobStore(tmp_path)
    assert [r.job for r in again.jobs_of("trainer")] == ["j"] and again.bytes_of("owner") == x.nbytes
    assert again.pending_releases() == [("j", b"N" * 32)]
    again.release_done("j", b"N" * 32)
    assert JobStore(tmp_path).pending_releases() == []
    (tmp_path / "releases.bin").write_bytes(b"garbage")   # a corrupt queue: ended jobs again
    assert JobStore(tmp_path).pending_releases() == [("j", b"N" * 32)]
