"""CurveZMQ key pairs: generation, Z85 key files, and ``ss-engine keygen``.

A key pair named ``NAME`` lives in two files of one directory:

    NAME.key          the public key, Z85 text (40 characters), mode 0644 — hand it out
    NAME.key_secret   the secret key, Z85 text, mode 0600 — never leaves its host

Loading a secret file that group or others can read is refused (like ssh does), so a key
copied carelessly fails loudly instead of silently weakening authentication.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq

__all__ = ["KeyPair", "KeyFileError", "generate_keypair", "save_keypair", "load_keypair",
           "load_public_key", "ensure_keypair", "keygen", "public_path", "secret_path"]

_Z85_RE = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class KeyFileError(ValueError):
    """A key file is missing, malformed, or has unsafe permissions."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes   # Z85, 40 bytes
    secret: bytes   # Z85, 40 bytes

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public.decode()!r})"


def generate_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def public_path(directory, name: str) -> Path:
    return Path(directory) / f"{name}.key"


def secret_path(directory, name: str) -> Path:
    return Path(directory) / f"{name}.key_secret"


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise KeyFileError(f"invalid key name {name!r} (letters, digits, '_', '-', '.')")


def _parse(data: bytes, path) -> bytes:
    key = data.strip()
    if not _Z85_RE.match(key):
        raise KeyFileError(f"{path}: not a Z85 CurveZMQ key (40 characters expected)")
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + f".tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def save_keypair(pair: KeyPair, directory, name: str) -> tuple[Path, Path]:
    _check_name(name)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = public_path(d, name), secret_path(d, name)
    _write(sec, pair.secret, 0o600)
    _write(pub, pair.public, 0o644)
    return pub, sec


def load_public_key(path) -> bytes:
    p = Path(path)
    try:
        return _parse(p.read_bytes(), p)
    except FileNotFoundError:
        raise KeyFileError(f"public key file {p} not found (run `ss-engine keygen`)") from None


def load_keypair(directory, name: str) -> KeyPair:
    _check_name(name)
    pub, sec = public_path(directory, name), secret_path(directory, name)
    public = load_public_key(pub)
    try:
        st = os.stat(sec)
    except FileNotFoundError:
        raise KeyFileError(f"secret key file {sec} not found (run `ss-engine keygen`)") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"secret key file {sec} is readable by group/others "
                        f"(mode {st.st_mode & 0o777:o}); run chmod 600 {sec}")
    secret = _parse(sec.read_bytes(), sec)
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{sec} and {pub} are not one key pair")
    return KeyPair(public, secret)


def ensure_keypair(directory, name: str) -> KeyPair:
    """Load ``name``'s key pair, creating it on first use."""
    if not secret_path(directory, name).exists():
        save_keypair(generate_keypair(), directory, name)
    return load_keypair(directory, name)


def keygen(directory, names, *, force: bool = False) -> dict[str, tuple[Path, Path]]:
    """``ss-engine keygen``: make key pairs ``names`` in ``directory`` (existing ones kept
    unless ``force``).  Returns {name: (public file, secret file)}."""
    out = {}
    for name in names:
        _check_name(name)
        if force or not secret_path(directory, name).exists():
            save_keypair(generate_keypair(), directory, name)
        load_keypair(directory, name)  # validates what is on disk
        out[name] = (public_path(directory, name), secret_path(directory, name))
    return out
