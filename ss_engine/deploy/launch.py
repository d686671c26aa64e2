"""Start the dealer and both servers as local subprocesses, and stop them cleanly.

``launch_local`` is what ``ss-engine up`` and ``ss-engine train`` (with no servers named)
use.  Each process logs to ``<root>/logs/<name>.log`` and prints one ``READY`` line there
once it listens; stopping sends SIGTERM, waits, then SIGKILL — always by pid, only the
processes this launcher started.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..net.keys import keygen
from .config import DeployConfig, load_config, local_config, write_config
from .ports import free_ports

__all__ = ["free_ports", "ProcessHandle", "LocalDeployment", "launch_local", "ensure_keys",
           "run_up", "READY_MARK"]

READY_MARK = "READY"


def ensure_keys(cfg: DeployConfig) -> None:
    """Key pairs for dealer, servers and clients on first use (existing ones are kept)."""
    keygen(cfg.path(cfg.keys_dir), [cfg.dealer.key, cfg.servers[0].key, cfg.servers[1].key,
                                    *cfg.clients])


@dataclass
class ProcessHandle:
    name: str
    argv: list
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, env: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; "
                                   f"see {self.log}:\n{self.tail()}")
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                if READY_MARK.encode() in f.read():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready within {timeout:.0f} s; see {self.log}")

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class LocalDeployment:
    config: DeployConfig
    config_path: Path
    handles: dict = field(default_factory=dict)  # name -> ProcessHandle

    def endpoints(self) -> dict:
        c = self.config
        return {"dealer": c.dealer.connect, "server0": c.servers[0].client,
                "server1": c.servers[1].client, "peer": c.peer_connect}

    def restart(self, name: str, timeout: float = 60.0) -> None:
        h = self.handles[name]
        h.stop()
        h.start(_env())
        h.wait_ready(timeout)

    def stop(self) -> None:
        for name in ("server0", "server1", "dealer"):
            h = self.handles.get(name)
            if h is not None:
                h.stop()

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("NUMBA_CACHE_DIR", str(Path(root) / ".numba_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch_local(config: DeployConfig | str | os.PathLike | None = None, *, root=None,
                 ready_timeout: float = 60.0, python: str | None = None, **overrides) -> LocalDeployment:
    """Start dealer, server 0 and server 1; returns once all three listen.

    ``config``: a DeployConfig, a config file, or None for a fresh loopback deployment under
    ``root`` (free ports; ``overrides`` go to :func:`local_config`).  Keys are made on first
    use.  On any failure every process already started is stopped before the error is raised.
    """
    if config is None:
        if root is None:
            raise ValueError("launch_local needs a config or a root directory")
        cfg = local_config(root, **overrides)
        path = write_config(cfg, Path(root) / "deploy.toml")
    elif isinstance(config, DeployConfig):
        cfg = config
        path = write_config(cfg, Path(cfg.root) / "deploy.toml")
    else:
        path = Path(config)
        cfg = load_config(path)
    ensure_keys(cfg)
    py = python or sys.executable
    logs = cfg.path("logs")
    dep = LocalDeployment(cfg, path)
    specs = {"dealer": [py, "-m", "dealer", "--config", str(path)],
             "server0": [py, "-m", "servers", "--rank", "0", "--config", str(path)],
             "server1": [py, "-m", "servers", "--rank", "1", "--config", str(path)]}
    try:
        for name, argv in specs.items():
            h = ProcessHandle(name, argv, logs / f"{name}.log")
            dep.handles[name] = h
            h.start(_env())
        for h in dep.handles.values():
            h.wait_ready(ready_timeout)
    except BaseException:
        dep.stop()
        raise
    return dep


def run_up(config=None, root="ss-engine-local") -> int:
    """``ss-engine up``: start all three, print endpoints, stop them on Ctrl-C / SIGTERM."""
    dep = launch_local(config, root=None if config else root)
    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"config   {dep.config_path}")
        for name, ep in dep.endpoints().items():
            pid = dep.handles[name].pid if name in dep.handles else "-"
            print(f"{name:<8} {ep}  (pid {pid})")
        print(f"keys     {dep.config.path(dep.config.keys_dir)}   logs {dep.config.path('logs')}")
        print("press Ctrl-C to stop", flush=True)
        while not stop["flag"]:
            dead = [n for n, h in dep.handles.items() if not h.alive()]
            if dead:
                print(f"{', '.join(dead)} exited; see the logs", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        dep.stop()
        print("stopped dealer, server0, server1")
    return 0
