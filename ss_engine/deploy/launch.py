"""Start the dealer and both servers as local subprocesses, and stop them cleanly.

``launch_local`` is what ``ss-engine up`` and ``ss-engine train`` (with no servers named)
use.  Each process logs to ``<root>/logs/<name>.log`` and prints one ``READY`` line there
once it listens; stopping sends SIGTERM to all, waits, then SIGKILL — always by pid, only
the processes this launcher started.  The processes also hold the launcher's lifeline
(:mod:`.lifeline`): if the launcher dies in any way, kill -9 included, they stop within
seconds, and those of an ``ephemeral`` deployment remove its folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..net.keys import keygen
from .config import DeployConfig, load_config, local_config, write_config
from .lifeline import Lifeline
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
    pass_fds: tuple = ()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, env: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                         pass_fds=self.pass_fds)

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

    def _signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass   # it has just exited

    def terminate(self) -> None:
        """SIGTERM (no wait); see :meth:`stop`."""
        self._signal(signal.SIGTERM)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(max(0.0, grace))
        except subprocess.TimeoutExpired:
            self.kill9()

    def kill9(self) -> None:
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)


@dataclass
class LocalDeployment:
    config: DeployConfig
    config_path: Path
    handles: dict = field(default_factory=dict)  # name -> ProcessHandle
    lifeline: Lifeline | None = None

    def endpoints(self) -> dict:
        c = self.config
        return {"dealer": c.dealer.connect, "server0": c.servers[0].client,
                "server1": c.servers[1].client, "peer": c.peer_connect}

    def restart(self, name: str, timeout: float = 60.0) -> None:
        h = self.handles[name]
        h.stop()
        h.start(_env())
        h.wait_ready(timeout)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to both servers at once, then to the dealer (a server stopping at its next
        step may still need the dealer for this one); SIGKILL to any process still there
        ``grace`` seconds after its SIGTERM."""
        for group in (("server0", "server1"), ("dealer",)):
            handles = [self.handles[n] for n in group if n in self.handles]
            for h in handles:
                h.terminate()
            deadline = time.monotonic() + grace
            for h in handles:
                h.stop(deadline - time.monotonic())
        if self.lifeline is not None:
            self.lifeline.close()
            self.lifeline = None

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("NUMBA_CACHE_DIR", str(Path(root) / ".numba_cache"))
    # three compute processes on one machine keep its cores busy together: a kernel's thread
    # team only waits for a busy core (measured, network-a: 147 vs 199 ms of CPU per step)
    env.setdefault("SS_ENGINE_NUM_THREADS", "1")   # kernels.NUM_THREADS_ENV (not imported: numba)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch_local(config: DeployConfig | str | os.PathLike | None = None, *, root=None,
                 ready_timeout: float = 60.0, python: str | None = None, ephemeral: bool = False,
                 **overrides) -> LocalDeployment:
    """Start dealer, server 0 and server 1; returns once all three listen.

    ``config``: a DeployConfig, a config file, or None for a fresh loopback deployment under
    ``root`` (free ports; ``overrides`` go to :func:`local_config`).  Keys are made on first
    use.  On any failure every process already started is stopped before the error is raised.
    The processes stop when this process ends, however it ends; with ``ephemeral`` (a
    temporary folder of this run only) they then also remove the config's folder.
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
    dep = LocalDeployment(cfg, path, lifeline=Lifeline())
    tail = dep.lifeline.child_args() + (["--ephemeral"] if ephemeral else [])
    specs = {"dealer": [py, "-m", "dealer", "--config", str(path)],
             "server0": [py, "-m", "servers", "--rank", "0", "--config", str(path)],
             "server1": [py, "-m", "servers", "--rank", "1", "--config", str(path)]}
    try:
        for name, argv in specs.items():
            h = ProcessHandle(name, argv + tail, logs / f"{name}.log",
                              pass_fds=(dep.lifeline.read_fd,))
            dep.handles[name] = h
            h.start(_env())
        for h in dep.handles.values():
            h.wait_ready(ready_timeout)
    except BaseException:
        dep.stop()
        raise
    return dep


def run_up(config=None, root="ss-engine-local") -> int:
    """``ss-engine up``: start all three, print endpoints, stop them on Ctrl-C, SIGTERM or
    SIGHUP (and, through the lifeline, if this process is killed)."""
    dep = launch_local(config, root=None if config else root)
    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True
    old = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
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
        for sig, handler in old.items():
            signal.signal(sig, handler)
        dep.stop()
        print("stopped dealer, server0, server1")
    return 0
