"""Deployment config parsing and ``ss-engine up`` (run_up) start/stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ss_engine.deploy.config import ConfigError, load_config, local_config, write_config

from .test_deploy_helpers import process_running

ROOT = Path(__file__).resolve().parents[1]


def test_config_round_trip_and_relative_paths(tmp_path):
    cfg = local_config(tmp_path, ports=(21001, 21002, 21003, 21004), checkpoint_every=7)
    p = write_config(cfg, tmp_path / "d.toml")
    back = load_config(p)
    assert back.dealer.endpoint == "tcp://127.0.0.1:21001"
    assert back.servers[0].client == "tcp://127.0.0.1:21002" and back.peer_connect.endswith(":21004")
    assert back.checkpoint_every == 7 and back.path("keys") == tmp_path / "keys"
    assert back.peer_bulk_cipher == "aes-gcm"
    text = p.read_text().replace('peer_bulk_cipher = "aes-gcm"', 'peer_bulk_cipher = "curve"')
    (tmp_path / "c.toml").write_text(text)
    assert load_config(tmp_path / "c.toml").peer_bulk_cipher == "curve"
    (tmp_path / "x.toml").write_text(text.replace('"curve"', '"rot13"'))
    with pytest.raises(ConfigError, match="peer_bulk_cipher"):
        load_config(tmp_path / "x.toml")


@pytest.mark.parametrize("text, needle", [
    ("[dealer]\nendpoint = 'udp://x:1'\n[server0]\n", "not a tcp://"),
    ("bogus = 1\n", "unknown settings"),
    ("[dealer]\n[server0]\nclient_endpoint='tcp://127.0.0.1:1'\nkey='s'\ndata_dir='d'\n"
     "[server1]\nclient_endpoint='tcp://127.0.0.1:2'\nkey='t'\ndata_dir='e'\n", "peer_endpoint"),
    ("[dealer]\nwhat = 1\n[server0]\n[server1]\n", "unknown settings"),
    ("not toml ][", "config"),
])
def test_config_errors_are_clear(tmp_path, text, needle):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_up_starts_three_processes_and_they_end_with_it(tmp_path, sig):
    """SIGTERM / SIGHUP stop ``up`` and its three processes; after kill -9 of ``up`` they
    see their lifeline close and stop by themselves.  The folder (keys) is kept."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c",
                             "from ss_engine.deploy.launch import run_up; import sys; "
                             f"sys.exit(run_up(root={str(tmp_path)!r}))"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            start_new_session=True)
    pids: list[int] = []
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        text = "".join(lines)
        assert "server0" in text and "dealer" in text and "Ctrl-C" in text, text
        pids += [int(w.rstrip(")")) for ln in lines for w in ln.split()[1:] if w.rstrip(")").isdigit()]
        assert len(pids) == 3
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=30)
        if sig != signal.SIGKILL:
            assert "stopped dealer, server0, server1" in out
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_running(p) for p in pids):
            time.sleep(0.05)
        assert not any(process_running(p) for p in pids), pids
        assert (tmp_path / "keys" / "server0.key_secret").stat().st_mode & 0o777 == 0o600
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in pids:  # the three children, should anything above have failed
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)

