"""Issue 10 through the three real processes: job instances never share masks, roles
between authorised clients, quotas, settings validation, memory before authentication.

One deployment serves the module (clients: the trainer "client", a data owner "hospital"
and an unrelated authorised "stranger"; small quotas so that they are reached quickly).
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from client.cli import main as cli_main
from client.session import ClientSession
from client.train import train_remote
from ss_engine.comm import memory_channel_pair
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.description import init_params
from ss_engine.encoding import encode
from ss_engine.job import TrainJob, batch_order
from ss_engine.local_train import load_preprocessed
from ss_engine.net.wire import read_frames_file
from ss_engine.net.zmq_channel import RpcError
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.party import PartyContext
from ss_engine.preprocessing import DealerCore, LocalDealer, SeededSource
from ss_engine.prg import PRG
from ss_engine.request import TrainRequest
from ss_engine.sharing import share
from ss_engine.training import PartyState, train_party

from .test_deploy_helpers import start

FIXED = FixedPointConfig(frac_bits=16)
BS = 32


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = start(tmp_path_factory.mktemp("tenancy"), clients=("client", "hospital", "stranger"),
              max_jobs_per_client=4, max_bytes_per_client=24 << 20)
    try:
        yield d
    finally:
        d.stop()
        assert not any(h.alive() for h in d.handles.values())


def _shares(x, y, prg):
    p = share_arrays({k: encode(v, FIXED) for k, v in init_params("network-a", 0).items()}, prg)
    return p, share(encode_images(x, FIXED), prg), share(encode_labels(y, FIXED), prg)


# -- 1. a job id used twice never reuses the dealer's seeds --------------------------------
def _replay(keys, params, xs, ys, job):
    """Both parties' run in-process with the dealer's keys of a deployed instance: the final
    shares (to check against the servers') and every value party 0 saw opened."""
    dealer = LocalDealer(DealerCore(*keys))
    ch0, ch1 = memory_channel_pair(60)
    ctx = [PartyContext(0, ch0, SeededSource(0, keys[0], dealer.link(0)), EngineConfig(fixed=FIXED)),
           PartyContext(1, ch1, SeededSource(1, keys[1], dealer.link(1)), EngineConfig(fixed=FIXED))]
    opened, inner = [], ch0.exchange

    def spy(arrays, label="", planned=None):
        got = inner(arrays, label, planned)
        opened.append([np.asarray(a) + g for a, g in zip(arrays, got)])   # what server 0 learns
        return got
    ch0.exchange = spy
    states = [PartyState({k: v.copy() for k, v in params[r].items()}) for r in (0, 1)]
    errs = []

    def run(r):
        try:
            train_party(ctx[r], xs[r], ys[r], job, states[r])
        except BaseException as exc:  # noqa: BLE001
            errs.append(exc)
            ctx[r].channel.close()
    ts = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    assert not errs, errs
    return [s.params for s in states], opened


def test_job_id_used_twice_never_reuses_masks(dep):
    """Train job "weekly" on data A, delete it, train a new "weekly" on data B (issue 10:
    every mask repeated, and server 0 recovered X_A - X_B from the first opened batch)."""
    x, y, _, _ = load_preprocessed("mnist-small", 128, 10)
    instances = dep.config.path(dep.config.dealer.data_dir) / "instances"
    seen: dict[str, tuple] = {}
    stop = threading.Event()

    def watch():   # the dealer's key files exist only while an instance is live
        while not stop.is_set():
            for p in instances.glob("*.keys"):
                try:
                    seen.setdefault(p.stem, tuple(a.tobytes() for a in read_frames_file(p)[1]))
                except (OSError, ValueError):
                    pass
            time.sleep(0.005)
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    job, runs = TrainJob(batch_size=BS), []
    try:
        for rows in (slice(0, 64), slice(64, 128)):
            params, xs, ys = _shares(x[rows], y[rows], PRG.from_os_random())
            before = set(seen)
            with ClientSession(dep.config) as s:
                s.create("weekly", owners=["client"])
                s.upload_params("weekly", *params)
                s.upload_part("weekly", "p", xs, ys)
                s.submit("weekly", "train", job, 16, parts=["p"])
                s.wait("weekly", timeout=120)
                result = s.fetch("weekly")
                s.delete("weekly")
            deadline = time.monotonic() + 15   # the servers tell the dealer; it deletes the keys
            while any(instances.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(instances.iterdir()), "the dealer kept an ended instance's keys"
            new = set(seen) - before
            assert len(new) == 1, new
            runs.append(dict(keys=seen[new.pop()], params=params, xs=xs, ys=ys, result=result,
                             x=encode_images(x[rows], FIXED)))
    finally:
        stop.set()
        th.join(5)
    assert not set(runs[0]["keys"]) & set(runs[1]["keys"])
    views = []
    for r in runs:
        final, opened = _replay(r["keys"], r["params"], r["xs"], r["ys"], job)
        for p in (0, 1):   # the replay is the deployed run, bit for bit
            for k in final[p]:
                assert np.array_equal(final[p][k], r["result"][p][k]), (p, k)
        views.append(opened)
    idx = batch_order(64, job.shuffle_seed, 0)[:BS]
    e1, e2 = (next(a for a in v[0] if a.shape == (BS, 784)) for v in views)
    x_diff = runs[0]["x"][idx] - runs[1]["x"][idx]
    assert np.mean(e1 - e2 == x_diff) < 1e-3          # E1 - E2 = X1 - X2 would be the leak
    for o1, o2 in zip(*views):                         # no opening repeats its mask either
        for a1, a2 in zip(o1, o2):
            assert np.mean(a1 == a2) < 0.01


# -- 2. roles between authorised clients ----------------------------------------------------
def _req(cfg, who: str, header: dict, arrays=((), ())):
    """Send to both servers as ``who``: the replies, or the error text (one line)."""
    with ClientSession(cfg, who, timeout=10) as s:
        try:
            return [h for h, _ in s.both(header, arrays)]
        except RpcError as exc:
            assert "\n" not in str(exc)
            return str(exc)


def _allowed(reply) -> bool:
    return not isinstance(reply, str)


def test_every_role_pair_against_every_request(dep):
    cfg = dep.config
    x, y, _, _ = load_preprocessed("mnist-small", BS, 10)
    params, xs, ys = _shares(x, y, PRG.from_os_random())
    one = [np.zeros((1, 784), np.int64)]   # one chunk for each server
    with ClientSession(cfg, "client") as t:
        t.create("roles", owners=["hospital"])
        t.upload_params("roles", *params)
        nonce = t._nonce["roles"]
    assert "exists" in _req(cfg, "stranger", {"type": "create", "job": "roles", "owners": []})

    def up(name, rows=1):
        return {"type": "upload", "job": "roles", "name": name, "offset": 0, "rows": rows,
                "row_shape": [784] if name != "data/h/y" else [10]}
    # uploads: parameters and inputs only from the trainer, parts only from a named owner
    for who in ("client", "hospital", "stranger"):
        r = _req(cfg, who, up("input/x"), (one, one))
        assert _allowed(r) == (who == "client"), (who, r)
        r = _req(cfg, who, up("data/s/x"), (one, one))
        assert _allowed(r) == (who == "hospital"), (who, r)
        assert who == "hospital" or "only the data owners named" in r or "another client" in r
    with ClientSession(cfg, "hospital") as h:
        h.upload_part("roles", "h", xs, ys)
    # upload_status: members only, and each sees only its own tensors; the nonce: trainer only
    st = {who: _req(cfg, who, {"type": "upload_status", "job": "roles"})
          for who in ("client", "hospital", "stranger")}
    assert "another client" in st["stranger"]
    assert all(n.startswith(("param/", "input/")) for n in st["client"][0]["tensors"])
    assert set(st["hospital"][0]["tensors"]) == {"data/h/x", "data/h/y", "data/s/x"}
    assert "nonce_part" in st["client"][0] and "nonce_part" not in st["hospital"][0]
    # submit, status, delete before the run: the trainer only
    sub = {"type": "submit", "job": "roles", "kind": "train", "train": {"batch_size": BS},
           "frac_bits": 16, "parts": ["h"], "model_job": "", "nonce": nonce}
    for who in ("hospital", "stranger"):
        for hdr in (sub, {"type": "status", "job": "roles"}, {"type": "delete", "job": "roles"},
                    {"type": "fetch", "job": "roles"}):
            r = _req(cfg, who, hdr)
            assert not _allowed(r), (who, hdr["type"], r)
            assert ("only the trainer" in r) if who == "hospital" else ("another client" in r)
    # a part the job does not name (from the trainer itself) cannot join
    r = _req(cfg, "client", {**sub, "parts": ["h", "s"]})
    assert not _allowed(r) and ("data/s/y is missing" in r or "data owner" in r), r
    assert _allowed(_req(cfg, "client", sub))
    with ClientSession(cfg, "client") as t:
        t.wait("roles", timeout=120)
        assert set(t.fetch("roles")[0]) == set(params[0])
        assert _allowed(_req(cfg, "client", {"type": "status", "job": "roles"}))
    # after the run: a data owner never receives model (fetch) or loss (status) shares, and
    # cannot predict with the model; nor can a stranger
    for who in ("hospital", "stranger"):
        for hdr in ({"type": "fetch", "job": "roles"}, {"type": "status", "job": "roles"},
                    {"type": "delete", "job": "roles"}):
            assert not _allowed(_req(cfg, who, hdr)), (who, hdr)
        with ClientSession(cfg, who) as s:
            s.create(f"pred-{who}")
            s.upload(f"pred-{who}", "input/x", np.zeros((2, 784), np.int64), np.zeros((2, 784), np.int64))
            with pytest.raises(RpcError, match="not a finished training job of yours"):
                s.submit(f"pred-{who}", "predict", TrainJob(), 16, model_job="roles")
            s.delete(f"pred-{who}")
    # jobs: the trainer and the named owner see the job (with their role), the stranger not
    lists = {who: ClientSession(cfg, who).jobs() for who in ("client", "hospital", "stranger")}
    roles = {who: {j["job"]: j["role"] for j in ls[0]} for who, ls in lists.items()}
    assert roles["client"].get("roles") == "trainer" and roles["hospital"].get("roles") == "owner"
    assert "roles" not in roles["stranger"]
    assert _allowed(_req(cfg, "client", {"type": "delete", "job": "roles"}))


# -- 3. owners from creation, quotas, jobs deleted after fetching ----------------------------
def test_one_client_cannot_fill_a_server_for_another_even_across_restarts(dep):
    cfg = dep.config
    # the attack: one-row jobs until the server is full; now only the quota fills
    made = []
    with ClientSession(cfg, "stranger") as s:
        for i in range(20):
            try:
                s.create(f"squat{i}")
                s.upload(f"squat{i}", "input/x", *[np.zeros((1, 784), np.int64)] * 2)
                made.append(f"squat{i}")
            except RpcError as exc:
                assert "max_jobs_per_client" in str(exc)
    assert len(made) == cfg.max_jobs_per_client
    dep.restart("server0")
    dep.restart("server1")
    with ClientSession(cfg, "stranger") as s:   # the quota survives the restart
        with pytest.raises(RpcError, match="max_jobs_per_client"):
            s.create("squat-again")
        # bytes: a new tensor counts in full from its first chunk (2500 rows: 15.7 MB)
        def declare(name):
            return s.rpc[0].request({"type": "upload", "job": made[0], "name": name, "offset": 0,
                                     "rows": 2500, "row_shape": [784]}, [np.zeros((1, 784), np.int64)])
        declare("param/a")
        with pytest.raises(RpcError, match="max_bytes_per_client"):
            declare("param/b")
    with ClientSession(cfg, "client") as t:      # another client is unaffected
        t.create("mine")
        t.upload("mine", "input/x", *[np.zeros((4, 784), np.int64)] * 2)
        assert [j["job"] for j in t.jobs()[0]] == ["mine"]
        t.delete("mine")
    with ClientSession(cfg, "stranger") as s:
        for j in made:
            s.delete(j)
        assert s.jobs() == [[], []]


def test_train_deletes_its_job_unless_kept_and_jobs_lists_it(dep, capsys):
    req = TrainRequest.build(dataset="mnist-small", train_limit=BS, test_limit=10, batch_size=BS,
                             secure_eval=4, progress=False)
    r = train_remote(dep.config, req, timeout=120)
    assert not r["job_kept"] and ClientSession(dep.config).jobs() == [[], []]
    r = train_remote(dep.config, req, timeout=120, keep_job=True)
    assert r["job_kept"]
    assert cli_main(["jobs", "--config", str(dep.config_path)]) == 0
    out = capsys.readouterr().out
    assert r["job"] in out and "done" in out and out.count("\n") == 2   # header + one job
    assert cli_main(["delete", "--config", str(dep.config_path), "--job", r["job"]]) == 0
    assert cli_main(["jobs", "--config", str(dep.config_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no jobs"


# -- 4. training settings validated at submit ------------------------------------------------
@pytest.fixture(scope="module")
def settings_job(dep):
    with ClientSession(dep.config, "client") as t:
        t.create("settings")
        return t._nonce_halves("settings")


@pytest.mark.parametrize("field, value", [
    ("epochs", 1.5), ("batch_size", "x"), ("epochs", True), ("lr", float("nan")),
    ("momentum", 1.0), ("loss_every", -1), ("shuffle_seed", 2**64 - 1), ("model", 7),
    ("lr_step", None), ("weight_decay", float("inf")),
])
def test_submit_refuses_bad_settings_with_one_line_naming_the_field(dep, settings_job, field, value):
    r = _req(dep.config, "client", {"type": "submit", "job": "settings", "kind": "predict",
                                    "train": {field: value}, "frac_bits": 16, "parts": [],
                                    "model_job": "", "nonce": settings_job})
    assert isinstance(r, str) and f"invalid training settings: {field} must be" in r, r


# -- 5. memory before authentication ---------------------------------------------------------
def _greeting() -> bytes:
    """A ZMTP 3.0 greeting for the CURVE mechanism (RFC 23): signature, version, mechanism,
    as-server, filler: 64 bytes."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\x00") + \
        b"\x00" + b"\x00" * 31


def _rss(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(field + ":"))


@pytest.mark.parametrize("target", ["server0", "dealer"])
def test_oversized_greeting_is_refused_before_any_buffering(dep, target):
    """Declare a 4 GiB handshake command and stream 256 MiB of it: libzmq (ZMQ_MAXMSGSIZE)
    drops the connection at the size field; the victim's peak RSS stays flat."""
    ep = {"server0": dep.config.servers[0].client, "dealer": dep.config.dealer.connect}[target]
    host, port = ep[len("tcp://"):].rsplit(":", 1)
    pid = dep.handles[target].pid
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")   # reset the peak-RSS mark (VmHWM) to the current RSS
    base = _rss(pid, "VmRSS")
    sent, chunk = 0, bytes(1 << 20)
    conn = socket.create_connection((host, int(port)), timeout=10)
    try:
        conn.sendall(_greeting() + bytes([0x06]) + struct.pack(">Q", 4 << 30))  # command, long
        while sent < 256 << 20:
            conn.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass   # the server hung up: that is the fix
    finally:
        time.sleep(0.3)
        rise = _rss(pid) - base
        conn.close()
    assert rise < 64 << 20, f"{target} peak RSS rose by {rise >> 20} MiB after {sent >> 20} MiB sent"
    assert sent < 64 << 20, f"{target} kept reading {sent >> 20} MiB of an oversized frame"
    assert dep.handles[target].alive()
    with ClientSession(dep.config) as s:   # and serving goes on
        assert [h["type"] for h in s.ping()] == ["pong", "pong"]
    if target == "dealer":
        test = train_remote(dep.config, TrainRequest.build(
            dataset="mnist-small", train_limit=BS, test_limit=10, batch_size=BS, secure_eval=0,
            progress=False), timeout=120)
        assert test["steps"] == 1
