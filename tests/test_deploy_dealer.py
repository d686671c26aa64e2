"""The dealer service over CurveZMQ, in-process first (STYLE rule 11), then as a process."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from dealer.instances import InstanceError, InstanceRegistry
from dealer.service import DealerService
from ss_engine.comm import ChannelClosed, ChannelTimeout, memory_channel_pair
from ss_engine.net.dealer_link import RemoteDealerLink
from ss_engine.net.keys import load_keypair, load_public_key, public_path
from ss_engine.net.zmq_channel import CurveContext
from ss_engine.config import EngineConfig
from ss_engine.deploy.config import local_config
from ss_engine.deploy.launch import ensure_keys
from ss_engine.encoding import encode
from ss_engine.description import init_params
from ss_engine.owner import share_arrays
from ss_engine.party import PartyContext
from ss_engine.preprocessing import (Addr, DealerCore, InputMaskSpec, MaterialPlan, SeededSource,
                                     TruncSpec)
from ss_engine.prg import derive_seed
from ss_engine.simulate import LocalRuntime
from ss_engine.job import TrainJob
from ss_engine.training import PartyState, train_party

SEED = b"dealer-test-seed"


@pytest.fixture
def dealer(tmp_path):
    cfg = local_config(tmp_path, dealer_allow_test_seed=True)
    ensure_keys(cfg)
    svc = DealerService(cfg)
    stop = threading.Event()
    th = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    th.start()
    curves = []

    def link(rank, job, nonce=b"n" * 32, timeout=10):
        kd = cfg.path(cfg.keys_dir)
        curve = CurveContext(load_keypair(kd, cfg.servers[rank].key))
        curves.append(curve)
        return RemoteDealerLink(curve, cfg.dealer.connect, load_public_key(public_path(kd, "dealer")),
                                job, nonce, timeout=timeout)
    try:
        yield cfg, svc, link
    finally:
        stop.set()
        th.join(5)
        svc.close()
        for c in curves:
            c.close()


def open_both(l0, l1, digest="d" * 32, seeds=(None, None)):
    """Both parties open one instance at once (the dealer answers once both have asked)."""
    out, errs = [None, None], []

    def go(i, link):
        try:
            out[i] = link.open(digest, seeds[i])
        except Exception as exc:  # noqa: BLE001
            errs.append(exc)
    ts = [threading.Thread(target=go, args=a) for a in ((0, l0), (1, l1))]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    if errs:
        raise errs[0]
    return out


def _data(rt, n=64):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 1 << 16, size=(n, 784))
    y = np.zeros((n, 10), np.int64)
    y[np.arange(n), rng.integers(0, 10, n)] = 1 << 16
    init = init_params("network-a", 0)
    p0, p1 = share_arrays({k: encode(v, 16) for k, v in init.items()}, rt._input_prg)
    return p0, p1, rt.share_ring(x), rt.share_ring(y)


def test_remote_dealer_equals_in_process_bit_for_bit(dealer):
    cfg, svc, link = dealer
    job = TrainJob(batch_size=16, epochs=1)
    # reference: the local runtime with the same seed
    rt = LocalRuntime(seed=SEED)
    p0, p1, (x0, x1), (y0, y1) = _data(rt)
    ref = [PartyState(dict(p0)), PartyState(dict(p1))]
    rt.run(train_party, (x0, y0, job, ref[0], None), (x1, y1, job, ref[1], None))
    # same shares, parties' sources fed by the dealer service
    l0, l1 = link(0, "jobA"), link(1, "jobA")
    k0, k1 = open_both(l0, l1, seeds=(SEED, SEED))
    assert (k0, k1) == (derive_seed(SEED, "party0"), derive_seed(SEED, "party1"))  # LocalRuntime's
    ch0, ch1 = memory_channel_pair(30)
    ctx = [PartyContext(0, ch0, SeededSource(0, k0, l0), EngineConfig()),
           PartyContext(1, ch1, SeededSource(1, k1, l1), EngineConfig())]
    st = [PartyState(dict(p0)), PartyState(dict(p1))]
    on_step = None
    errs = []

    def run(r, x, y):
        try:
            train_party(ctx[r], x, y, job, st[r], on_step)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)
            ctx[r].channel.close()
    ts = [threading.Thread(target=run, args=a) for a in ((0, x0, y0), (1, x1, y1))]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    assert not errs, errs
    for a, b in zip(st, ref):
        assert a.step == b.step == 4
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k])
    s = l1.stats.as_dict()
    # the first step asks item by item and registers its plan; steps 2-4 are one blob each
    assert s["plans"] == 1 and s["blobs"] == 3 and s["resends"] == 0, s
    assert s["data_plane"] and s["bytes_received"] > 3 * 6 * 16 * 128 * 8   # blobs on AES-GCM
    assert 0 < s["requests"] < ctx[1].source.stats.items / 4, s
    # party 0 never hears from the dealer: no request, no plan, no blob
    assert l0.stats.requests == l0.stats.plans == l0.stats.blobs == 0
    l0.close()
    l1.close()


def test_dealer_refuses_bad_requests_and_keeps_serving(dealer):
    cfg, svc, link = dealer
    l0, l1 = link(0, "jobB"), link(1, "jobB")
    with pytest.raises(ChannelClosed, match="party 0 receives nothing"):
        l0._request({"type": "get", "addr": [1, 0, 0], "spec": TruncSpec((2,), 16).to_wire()})
    with pytest.raises(ChannelClosed, match="bad material spec"):
        l1._request({"type": "get", "addr": [1, 0, 0], "spec": {"kind": "cmp", "n": 10**12, "bits": 64,
                                                                 "block": 4, "fan_in": 4}})
    with pytest.raises(ChannelClosed, match="bad material spec"):
        l1._request({"type": "get", "addr": [1, 0, 0], "spec": {"kind": "nope"}})
    with pytest.raises(ChannelClosed, match="out of range"):
        l1._request({"type": "get", "addr": [-1, 0, 0], "spec": TruncSpec((2,), 16).to_wire()})
    with pytest.raises(ChannelClosed, match="unknown job instance"):
        link(1, "never-opened").item(Addr(3, 0, 0), TruncSpec((2,), 16))
    with pytest.raises(ChannelClosed, match="test seeds"):
        svc.cfg = type(svc.cfg)(**{**svc.cfg.__dict__, "dealer": type(svc.cfg.dealer)(
            **{**svc.cfg.dealer.__dict__, "allow_test_seed": False})})
        link(0, "jobC").open("d" * 32, SEED)
    # still serving, and each party gets its own key only
    a, b = open_both(link(0, "jobD"), link(1, "jobD"))
    assert a != b and len(a) == len(b) == 16
    iid = svc.instances.get("jobD", b"n" * 32).iid
    assert (cfg.path(cfg.dealer.data_dir) / "instances" / f"{iid}.keys").stat().st_mode & 0o777 == 0o600


def test_instance_born_only_when_both_servers_ask_with_one_digest(dealer):
    cfg, svc, link = dealer
    live = cfg.path(cfg.dealer.data_dir) / "instances"
    # one server alone gets no key: its answer waits for the other server
    with pytest.raises(ChannelTimeout):
        link(0, "jobE", timeout=1.5).open("d" * 32)
    assert not os.listdir(live)
    # the two ask with different digests: both hear the refusal and nothing is made
    errs = []

    def go(rank, digest):
        try:
            link(rank, "jobF").open(digest)
        except ChannelClosed as exc:
            errs.append(str(exc))
    ts = [threading.Thread(target=go, args=a) for a in ((0, "a" * 32), (1, "b" * 32))]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    assert len(errs) == 2 and all("different instances" in e for e in errs), errs
    assert not os.listdir(live)


def test_same_name_new_nonce_new_seeds_and_released_instance_never_served(dealer):
    cfg, svc, link = dealer
    data = cfg.path(cfg.dealer.data_dir)
    n1, n2 = os.urandom(32), os.urandom(32)
    k1 = open_both(link(0, "weekly", n1), link(1, "weekly", n1))
    assert open_both(link(0, "weekly", n1), link(1, "weekly", n1)) == k1   # a resume: same keys
    k2 = open_both(link(0, "weekly", n2), link(1, "weekly", n2))
    assert not set(k1) & set(k2)                                          # a new instance
    # a restarted dealer still serves the live instance (it regenerates from stored keys)
    assert InstanceRegistry(data).get("weekly", n1).keys == tuple(k1)
    link(1, "weekly", n1).release()
    for rank in (0, 1):   # never again, for either server, even after a restart
        with pytest.raises(ChannelClosed, match="has ended"):
            link(rank, "weekly", n1).open("d" * 32)
    with pytest.raises(InstanceError, match="has ended"):
        InstanceRegistry(data).get("weekly", n1)
    # only the live instance (n2) holds keys on disk; the ended one left a keyless tombstone
    assert [p.stem for p in (data / "instances").iterdir()] == [svc.instances.get("weekly", n2).iid]
    assert len(list((data / "ended").iterdir())) == 1


def test_dealer_process_gives_either_party_its_fields_per_item_and_per_run(dealer):
    """A kind with a field for party 0 (an input mask it owns) reaches party 0 from the
    dealer service, one item at a time and as a replayed run's blob; party 1 gets its
    corrections the same way, and both equal what the in-process dealer computes."""
    cfg, svc, link = dealer
    l0, l1 = link(0, "jobP"), link(1, "jobP")
    k0, k1 = open_both(l0, l1, seeds=(SEED, SEED))
    core = DealerCore(k0, k1)
    spec_in, spec_t = InputMaskSpec((6,), 0), TruncSpec((3, 2), 16)
    got = l0.item(Addr(4, 0, 0), spec_in)
    assert np.array_equal(got["r_clear"], core.item(0, Addr(4, 0, 0), spec_in)["r_clear"])
    with pytest.raises(ChannelClosed, match="party 1 receives nothing"):
        l1.item(Addr(4, 0, 0), spec_in)
    plan = MaterialPlan([spec_in, spec_t])
    for lk in (l0, l1):
        lk.register(plan)
    blobs = {}
    assert l0.stats.data_plane and l1.stats.data_plane
    for nonce in (7, 8, 9):
        if nonce == 9:   # the data plane breaks: the blobs come on CurveZMQ, the same
            for stream in list(svc.streams.values()):
                stream.close()
        for rank, lk in ((0, l0), (1, l1)):
            lk.announce(nonce, [(nonce, plan)] + ([(nonce + 1, plan)] if nonce == 7 else []))
            blobs[rank, nonce] = lk.blob(nonce, plan)
        want = core.step(nonce, plan)
        assert np.array_equal(blobs[0, nonce], want[0]) and np.array_equal(blobs[1, nonce], want[1])
    assert blobs[0, 7].shape == (6,) and blobs[1, 7].shape == (12,)
    assert not l1.stats.data_plane
    assert not np.array_equal(blobs[0, 7], blobs[0, 8])
    # a run announced with one plan is never generated with another
    other = MaterialPlan([TruncSpec((4,), 16)])
    l1.register(other)
    l1.announce(9, [(9, other)])
    with pytest.raises(ChannelClosed, match="another plan"):
        l1.blob(9, other)
    l0.close()
    l1.close()


def test_dealer_data_port_refuses_a_stranger_and_a_wrong_key(dealer):
    """The data port is plain TCP: a connection with an unknown link id, or with a granted
    id but a READY not sealed under the grant's key, is closed and never gets a blob; the
    forgery does not use up the party's grant."""
    import socket
    import time
    from ss_engine.net.dealer_data import data_grant, connect_data
    from ss_engine.net.dealer_link import DEALER_CAPS
    cfg, svc, link = dealer
    port = svc.data.port

    def closed_by_dealer(conn) -> bool:
        conn.settimeout(5)
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True
    stranger = socket.create_connection(("127.0.0.1", port))
    stranger.sendall(os.urandom(16))
    assert closed_by_dealer(stranger)
    stranger.close()
    real = svc.data.grant(("someone", 1))
    forged = {**data_grant(port), "link": real["link"]}   # the id leaked, the keys did not
    bad = connect_data("127.0.0.1", forged, 5, 2, DEALER_CAPS)
    assert closed_by_dealer(bad.sock)
    bad.close()
    deadline = time.monotonic() + 5
    while svc.data.rejected < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert svc.data.rejected == 2 and ("someone", 1) not in svc.streams
    good = connect_data("127.0.0.1", real, 5, 2, DEALER_CAPS)   # the grant was not used up
    while ("someone", 1) not in svc.streams and time.monotonic() < deadline + 5:
        time.sleep(0.01)
    assert ("someone", 1) in svc.streams and svc.data.rejected == 2
    good.close()
    # a flood of silent connections (more than may wait at once) costs the parties nothing
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    t0 = time.monotonic()
    l0, l1 = link(0, "jobD"), link(1, "jobD")
    open_both(l0, l1)
    assert l0.stats.data_plane and l1.stats.data_plane and time.monotonic() - t0 < 3
    for c in silent:
        c.close()
    l0.close()
    l1.close()
