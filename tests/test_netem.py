"""The simulated network: the delay is applied, the counters are unchanged, nothing hangs."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ss_engine.comm import ChannelClosed, memory_channel_pair
from ss_engine.comm.netem import NetemChannel, NetemConfig, install_netem
from ss_engine.protocols.opening import open_many, reveal_s
from ss_engine.simulate import LocalRuntime, PartyFailed


def _pair(cfg: NetemConfig, timeout: float = 10.0):
    a, b = memory_channel_pair(timeout)
    return NetemChannel(a, cfg), NetemChannel(b, cfg)


def _exchange_both(a, b, xa, xb, label="t"):
    got = {}
    th = threading.Thread(target=lambda: got.__setitem__("b", b.exchange(xb, label)))
    th.start()
    got["a"] = a.exchange(xa, label)
    th.join(10)
    assert not th.is_alive()
    return got["a"], got["b"]


def test_one_way_delay_applied_per_round():
    a, b = _pair(NetemConfig(rtt_seconds=0.1))
    t0 = time.perf_counter()
    for _ in range(5):
        ga, gb = _exchange_both(a, b, [np.arange(4, dtype=np.int64)], [np.ones(3, np.int64)])
    dt = time.perf_counter() - t0
    # 5 simultaneous exchanges cost 5 one-way delays (50 ms each), not 5 round trips (0.5 s)
    assert 0.245 <= dt < 0.45
    assert np.array_equal(ga[0], np.ones(3, np.int64)) and np.array_equal(gb[0], np.arange(4))


def test_bandwidth_serialisation_delay():
    # 1 MB at 80 Mbit/s = 0.1 s per message, no propagation delay
    a, b = _pair(NetemConfig(rtt_seconds=0.0, bandwidth_bps=80e6))
    x = np.zeros(125_000, np.int64)
    t0 = time.perf_counter()
    _exchange_both(a, b, [x], [x])
    dt = time.perf_counter() - t0
    assert 0.095 <= dt < 0.3
    # messages on one direction queue behind each other: two back-to-back sends take 0.2 s
    t0 = time.perf_counter()
    a.send_only([x])
    a.send_only([x])
    b.recv_only()
    b.recv_only()
    assert 0.19 <= time.perf_counter() - t0 < 0.4


def test_counters_match_the_undelayed_channel():
    """Same protocol code over a plain and a delayed runtime: identical bytes, rounds, labels."""
    def body(ctx, x):
        opened = yield from open_many(ctx, [x, x[:3]], "lbl_a")
        yield from reveal_s(ctx, x, to=1, label="lbl_b")
        return opened[0]

    x = np.arange(10, dtype=np.int64)
    stats = []
    for cfg in (None, NetemConfig(rtt_seconds=0.002, bandwidth_bps=1e9, overhead_bytes=64)):
        rt = LocalRuntime(seed=b"netem", timeout=10.0)
        if cfg is not None:
            chans = install_netem(rt.contexts, cfg)
            assert all(c.channel is ch for c, ch in zip(rt.contexts, chans))
        r0, r1 = rt.run_same(body, (x, x))
        assert np.array_equal(r0, 2 * x) and np.array_equal(r1, 2 * x)
        stats.append([(c.channel.stats.bytes_sent, c.channel.stats.bytes_received,
                       c.channel.stats.rounds, c.channel.stats.messages_sent,
                       dict(c.channel.stats.by_label)) for c in rt.contexts])
    assert stats[0] == stats[1]
    # party 0: 13 words opened + 10 revealed; party 1 opens 13 and receives the reveal
    assert stats[1][0][0] == 8 * 23 and stats[1][1][0] == 8 * 13
    assert stats[1][0][4] == {"lbl_a": (1, 104), "lbl_b": (1, 80)}


def test_wait_includes_the_simulated_delay():
    rt = LocalRuntime(seed=b"netem", timeout=10.0)
    install_netem(rt.contexts, NetemConfig(rtt_seconds=0.06))
    rt.run_same(lambda ctx, x: open_many(ctx, [x]), (np.zeros(2, np.int64), np.zeros(2, np.int64)))
    waits = [c.channel.stats.wait_seconds for c in rt.contexts]
    # the party that sent first waits the whole one-way delay; the later one a little less
    assert max(waits) >= 0.029 and min(waits) > 0.0
    assert max(c.channel.simulated_sleep_seconds for c in rt.contexts) > 0.02


def test_failure_does_not_hang():
    """A party that raises closes its (wrapped) channel; the peer gets ChannelClosed at once."""
    rt = LocalRuntime(seed=b"netem", timeout=30.0)
    install_netem(rt.contexts, NetemConfig(rtt_seconds=0.01))

    def body(ctx, x):
        if ctx.rank == 1:
            raise RuntimeError("boom")
        return open_many(ctx, [x])

    t0 = time.perf_counter()
    with pytest.raises(PartyFailed, match="boom"):
        rt.run_same(body, (np.zeros(2, np.int64), np.zeros(2, np.int64)))
    assert time.perf_counter() - t0 < 5.0


def test_closed_peer_and_unwrapped_peer():
    a, b = _pair(NetemConfig(rtt_seconds=0.001))
    b.close()
    with pytest.raises(ChannelClosed):
        a.recv_only()
    raw_a, raw_b = memory_channel_pair(5.0)
    wrapped = NetemChannel(raw_a, NetemConfig())
    raw_b.send_only([np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match="time stamp"):
        wrapped.recv_only()


def test_config_validation():
    with pytest.raises(ValueError):
        NetemConfig(rtt_seconds=-1)
    with pytest.raises(ValueError):
        NetemConfig(bandwidth_bps=0)
    with pytest.raises(ValueError):
        NetemChannel(NetemChannel(memory_channel_pair()[0], NetemConfig()), NetemConfig())
    cfg = NetemConfig(rtt_seconds=0.01, bandwidth_bps=1e9)
    assert cfg.one_way_seconds == 0.005
    assert cfg.serialisation_seconds(125_000_000) == pytest.approx(1.0)
    assert "10 ms" in cfg.label()
