"""The deployment config: where the dealer and the two servers listen, keys, data dirs.

One TOML (or JSON) file describes a deployment; every process reads the same file and
uses its own section.  Relative paths are relative to the file.  Example (all loopback,
the defaults)::

    keys_dir = "keys"                 # NAME.key (public) / NAME.key_secret (0600)
    clients = ["client"]              # key names of authorised clients (data owners, trainer)
    checkpoint_every = 20             # steps between checkpoints (and at every epoch end)
    peer_timeout = 60.0               # s without a message from the peer -> ChannelTimeout
    peer_wait_limit = 600.0           # s a job waits for an absent peer/dealer before failing
    peer_bulk_cipher = "aes-gcm"      # server<->server data: AES-GCM keyed over CurveZMQ, or "curve"
    max_model_params = 20000000       # a job's model: parameters at most (0: no cap)
    max_activations_per_batch = 134217728  # values all layers output for one batch (0: no cap)

    # tenancy: what one client may hold on each server, so no client can fill a server for
    # the others (jobs count against their trainer, uploaded bytes against their uploader)
    max_jobs_per_client = 16          # jobs a client has created and not yet deleted
    max_bytes_per_client = 8589934592 # bytes of shares a client has uploaded (8 GiB)
    max_jobs = 0                      # all jobs on a server; 0: max_jobs_per_client x clients
                                      # (a smaller value is refused: some clients could then
                                      # fill the server for the rest)
    upload_expiry = 86400.0           # s a job may stay "uploading" without a new chunk;
                                      # then it is deleted (checked every second, and at start)

    [dealer]
    endpoint = "tcp://127.0.0.1:7100" # bind address; servers connect to connect_endpoint
    key = "dealer"
    data_dir = "run/dealer"
    window_steps = 2                  # pre-generate this many training steps ahead
    allow_test_seed = false           # tests only: deterministic job keys

    [server0]
    client_endpoint = "tcp://127.0.0.1:7000"
    peer_endpoint = "tcp://127.0.0.1:7010"   # server 0 binds it, server 1 connects
    key = "server0"
    data_dir = "run/server0"

    [server1]
    client_endpoint = "tcp://127.0.0.1:7001"
    key = "server1"
    data_dir = "run/server1"

On three hosts, set ``endpoint``/``client_endpoint``/``peer_endpoint`` to the address each
process binds (e.g. ``tcp://0.0.0.0:7000``) and ``connect_endpoint`` to the address others
reach it at (``tcp://10.0.0.5:7000``).  Each host keeps only its own ``.key_secret``.
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from ..description import ModelCaps
from .ports import free_ports

__all__ = ["DeployConfig", "DealerSection", "ServerSection", "ConfigError", "load_config",
           "local_config", "write_config"]

_EP_RE = re.compile(r"tcp://[A-Za-z0-9_.\-\[\]:*]+:\d{1,5}\Z")


class ConfigError(ValueError):
    """The deployment config is missing a setting or has an invalid one."""


@dataclass(frozen=True)
class DealerSection:
    endpoint: str = "tcp://127.0.0.1:7100"
    connect_endpoint: str = ""
    key: str = "dealer"
    data_dir: str = "run/dealer"
    window_steps: int = 2
    allow_test_seed: bool = False

    @property
    def connect(self) -> str:
        return self.connect_endpoint or self.endpoint


@dataclass(frozen=True)
class ServerSection:
    client_endpoint: str
    key: str
    data_dir: str
    peer_endpoint: str = ""          # server 0 binds it
    client_connect: str = ""
    peer_connect: str = ""

    @property
    def client(self) -> str:
        return self.client_connect or self.client_endpoint


@dataclass(frozen=True)
class DeployConfig:
    root: str
    dealer: DealerSection
    servers: tuple  # (ServerSection, ServerSection)
    keys_dir: str = "keys"
    clients: tuple = ("client",)
    checkpoint_every: int = 20
    peer_timeout: float = 60.0
    peer_wait_limit: float = 600.0
    dealer_timeout: float = 60.0
    max_jobs: int = 0                 # 0: max_jobs_per_client * len(clients)
    max_jobs_per_client: int = 16
    max_bytes_per_client: int = 8 << 30
    upload_expiry: float = 86400.0
    #: how server<->server data frames are protected: "aes-gcm" (keys exchanged in the
    #: CurveZMQ handshake; ports: peer_endpoint plus one ephemeral data port on server 0's
    #: host) or "curve" (everything on the CurveZMQ socket, ~100 ms slower per step here)
    peer_bulk_cipher: str = "aes-gcm"
    max_model_params: int = 20_000_000
    max_activations_per_batch: int = 1 << 27

    @property
    def model_caps(self) -> ModelCaps:
        return ModelCaps(self.max_model_params, self.max_activations_per_batch)

    @property
    def job_limit(self) -> int:
        """All jobs one server (or the dealer) holds at once."""
        return self.max_jobs or self.max_jobs_per_client * len(self.clients)

    def path(self, p: str) -> Path:
        return Path(p) if os.path.isabs(p) else Path(self.root) / p

    @property
    def peer_bind(self) -> str:
        return self.servers[0].peer_endpoint

    @property
    def peer_connect(self) -> str:
        return self.servers[0].peer_connect or self.servers[0].peer_endpoint


#: the top-level settings of a config file (the rest are the three sections)
_TOP_SETTINGS = ("keys_dir", "clients", "checkpoint_every", "peer_timeout", "peer_wait_limit",
                 "dealer_timeout", "max_jobs", "max_jobs_per_client", "max_bytes_per_client",
                 "upload_expiry", "peer_bulk_cipher", "max_model_params", "max_activations_per_batch")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_tenancy(cfg: DeployConfig) -> None:
    if not (_is_int(cfg.max_jobs_per_client) and cfg.max_jobs_per_client >= 1
            and _is_int(cfg.max_bytes_per_client) and cfg.max_bytes_per_client >= 1
            and _is_int(cfg.max_jobs) and cfg.max_jobs >= 0):
        raise ConfigError("max_jobs_per_client and max_bytes_per_client must be positive "
                          "integers, max_jobs a positive integer or 0")
    if isinstance(cfg.upload_expiry, bool) or not isinstance(cfg.upload_expiry, (int, float)) \
            or not cfg.upload_expiry > 0:
        raise ConfigError("upload_expiry must be a positive number of seconds")
    need = cfg.max_jobs_per_client * len(cfg.clients)
    if cfg.max_jobs and cfg.max_jobs < need:
        raise ConfigError(f"max_jobs = {cfg.max_jobs} is below max_jobs_per_client x clients = {need}: "
                          f"a few clients could then fill a server for the others (set max_jobs = 0 "
                          f"for exactly that product, or lower max_jobs_per_client)")


def _endpoint(v, where: str) -> str:
    if not isinstance(v, str) or not _EP_RE.match(v):
        raise ConfigError(f"{where}: {v!r} is not a tcp://HOST:PORT endpoint")
    return v


def _section(d: dict, name: str, cls, endpoints: tuple, **defaults):
    raw = d.get(name)
    if not isinstance(raw, dict):
        raise ConfigError(f"config lacks the [{name}] section")
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown settings {sorted(unknown)}")
    vals = {**defaults, **raw}
    for k in endpoints:
        if vals.get(k):
            _endpoint(vals[k], f"[{name}] {k}")
    try:
        return cls(**vals)
    except TypeError as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


def load_config(path) -> DeployConfig:
    """Parse a TOML or JSON deployment config; ConfigError on anything invalid."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    try:
        d = json.loads(text) if p.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
    top = {k: v for k, v in d.items() if not isinstance(v, dict)}
    known = set(_TOP_SETTINGS)
    if set(top) - known:
        raise ConfigError(f"unknown settings {sorted(set(top) - known)}")
    if set(d) - known - {"dealer", "server0", "server1"}:
        raise ConfigError(f"unknown sections {sorted(set(d) - known - {'dealer', 'server0', 'server1'})}")
    dealer = _section(d, "dealer", DealerSection, ("endpoint", "connect_endpoint"))
    s0 = _section(d, "server0", ServerSection, ("client_endpoint", "peer_endpoint", "client_connect",
                                                "peer_connect"))
    s1 = _section(d, "server1", ServerSection, ("client_endpoint", "client_connect"))
    if not s0.peer_endpoint:
        raise ConfigError("[server0] needs peer_endpoint (server 0 binds it, server 1 connects)")
    cfg = DeployConfig(root=str(p.resolve().parent), dealer=dealer, servers=(s0, s1), **{
        k: (tuple(v) if k == "clients" else v) for k, v in top.items()})
    if not (1 <= cfg.checkpoint_every <= 1_000_000 and cfg.peer_timeout > 0 and cfg.peer_wait_limit > 0):
        raise ConfigError("need checkpoint_every >= 1 and positive timeouts")
    if not all(isinstance(c, str) for c in cfg.clients):
        raise ConfigError("clients must be a list of key names")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in (cfg.max_model_params, cfg.max_activations_per_batch)):
        raise ConfigError("max_model_params and max_activations_per_batch must be integers >= 0")
    _check_tenancy(cfg)
    if cfg.peer_bulk_cipher not in ("aes-gcm", "curve"):
        raise ConfigError(f"peer_bulk_cipher must be \"aes-gcm\" or \"curve\", got {cfg.peer_bulk_cipher!r}")
    return cfg


def write_config(cfg: DeployConfig, path) -> Path:
    """Write ``cfg`` as TOML (paths kept as given)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(str(v))
    lines = [f"{k} = {val(getattr(cfg, k))}" for k in _TOP_SETTINGS]
    for name, sec in (("dealer", cfg.dealer), ("server0", cfg.servers[0]), ("server1", cfg.servers[1])):
        lines.append(f"\n[{name}]")
        for k in sec.__dataclass_fields__:
            v = getattr(sec, k)
            if v != "" or k == "data_dir":
                lines.append(f"{k} = {val(v)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def local_config(root, ports: tuple[int, int, int, int] | None = None, **overrides) -> DeployConfig:
    """A loopback deployment under ``root`` (free ports picked when none given)."""
    if ports is None:
        ports = free_ports(4)
    pd, p0, p1, pp = ports
    dealer_over = {k[7:]: overrides.pop(k) for k in list(overrides) if k.startswith("dealer_")
                   and k[7:] in DealerSection.__dataclass_fields__}
    cfg = DeployConfig(
        root=str(Path(root).resolve()),
        dealer=DealerSection(endpoint=f"tcp://127.0.0.1:{pd}", data_dir="dealer"),
        servers=(ServerSection(client_endpoint=f"tcp://127.0.0.1:{p0}", key="server0",
                               data_dir="server0", peer_endpoint=f"tcp://127.0.0.1:{pp}"),
                 ServerSection(client_endpoint=f"tcp://127.0.0.1:{p1}", key="server1",
                               data_dir="server1")),
    )
    if dealer_over:
        cfg = replace(cfg, dealer=replace(cfg.dealer, **dealer_over))
    return replace(cfg, **overrides) if overrides else cfg

