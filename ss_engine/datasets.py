"""The data owner's loader for MNIST and Fashion-MNIST in the IDX format.

Where the files are
-------------------
One setting: the environment variable ``SS_ENGINE_DATA``. When it is unset the
loader looks in ``../shared/datasets`` relative to the project root (the folder
holding ``pyproject.toml``), then in ``../shared/datasets`` relative to the
current working directory. Layout::

    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/SHA256SUMS            (optional; "<sha256>  <relative path>" lines)

Every file read is checked against ``SHA256SUMS`` when that file lists it; a
verification is remembered per process (keyed by path, size and mtime).

``mnist-small`` is a real MNIST subset shipped inside the package
(``ss_engine/data/``: the first 2,000 training and 500 test images) so a demo
works offline on a fresh machine.

Pixel scale
-----------
:func:`normalize` maps uint8 pixels to float32 in ``[0, 1]`` (``x / 255``).
Pass ``standardize=True`` to subtract the training-set mean and divide by the
standard deviation (``MEAN``/``STD`` below, computed on the full training sets).

:func:`download_dataset` fetches the four original archives of a dataset from
the official mirrors and checks their MD5 before writing them; nothing calls it
at test time.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ENV_VAR",
    "DATASETS",
    "MEAN",
    "STD",
    "Dataset",
    "ChecksumError",
    "IDXFormatError",
    "data_root",
    "load_dataset",
    "load",
    "check_available",
    "normalize",
    "download_dataset",
    "read_idx",
]

ENV_VAR = "SS_ENGINE_DATA"

# name -> (sub-folder of the data root, or None for the package's data folder; file prefix)
_LAYOUT: dict[str, tuple[str | None, str]] = {
    "mnist": ("mnist", ""),
    "fashion-mnist": ("fashion-mnist", ""),
    "mnist-small": (None, "mnist-small-"),
}
DATASETS = tuple(_LAYOUT)
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "mnist_small": "mnist-small"}

# Training-set pixel statistics on the [0, 1] scale.
MEAN = {"mnist": 0.1307, "fashion-mnist": 0.2860, "mnist-small": 0.1307}
STD = {"mnist": 0.3081, "fashion-mnist": 0.3530, "mnist-small": 0.3081}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_PACKAGE_DATA = Path(__file__).resolve().parent / "data"
_SUMS_NAMES = ("SHA256SUMS", "SHA256SUMS.txt")

_MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# MD5 of the original .gz archives (the values torchvision checks).
_ORIGINAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_IDX_UBYTE = 0x08
_MAGIC_LABELS = 0x00000801
_MAGIC_IMAGES = 0x00000803

# Per-process cache of verified files: (path, size, mtime_ns) -> sha256.
_VERIFIED: dict[tuple[str, int, int], str] = {}


class ChecksumError(ValueError):
    """A data file's hash differs from the one recorded for it."""


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file of the expected shape."""


@dataclass(frozen=True)
class Dataset:
    """One split of a dataset, as the data owner holds it (uint8, never shared yet)."""

    name: str
    split: str
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # uint8 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return 10


# --------------------------------------------------------------------------- paths


def _project_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``mnist/`` and ``fashion-mnist/``.

    Order: the ``root`` argument, ``$SS_ENGINE_DATA``, ``<project root>/../shared/datasets``,
    ``<cwd>/../shared/datasets``. When none exists the first candidate is returned, so
    the error raised later names a concrete path.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidates = []
    proj = _project_root()
    if proj is not None:
        candidates.append(proj.parent / "shared" / "datasets")
    candidates.append(Path.cwd().parent / "shared" / "datasets")
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _LAYOUT:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return key


def _files(name: str, split: str, root: str | os.PathLike | None) -> tuple[Path, Path, Path]:
    """(images path, labels path, folder whose SHA256SUMS covers them)."""
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    sub, prefix = _LAYOUT[name]
    if sub is None:
        folder = sums_dir = _PACKAGE_DATA
    else:
        sums_dir = data_root(root)
        folder = sums_dir / sub
    p = _SPLIT_PREFIX[split]
    return (
        folder / f"{prefix}{p}-images-idx3-ubyte.gz",
        folder / f"{prefix}{p}-labels-idx1-ubyte.gz",
        sums_dir,
    )


# --------------------------------------------------------------------------- checksums


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_sums(sums_dir: Path) -> tuple[Path, dict[str, str]] | None:
    for fname in _SUMS_NAMES:
        sums = sums_dir / fname
        if sums.is_file():
            table = {}
            for line in sums.read_text().splitlines():
                parts = line.strip().split(maxsplit=1)
                if len(parts) == 2:
                    table[parts[1].lstrip("*").removeprefix("./")] = parts[0].lower()
            return sums, table
    return None


def _verify(path: Path, sums_dir: Path) -> None:
    """Check ``path`` against the SHA256SUMS of ``sums_dir`` when it lists the file."""
    found = _read_sums(sums_dir)
    if found is None:
        return
    sums_file, table = found
    rel = path.relative_to(sums_dir).as_posix()
    expected = table.get(rel)
    if expected is None:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    actual = _VERIFIED.get(key)
    if actual is None:
        actual = _sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 of {path} is {actual}, but {sums_file} records {expected}: "
            "the file is corrupted or was replaced; restore it or fetch it again"
        )
    _VERIFIED[key] = actual


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read a (gzip-compressed when named ``*.gz``) IDX file of unsigned bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # truncated or not gzip
        raise IDXFormatError(f"{path}: cannot decompress ({exc})") from exc
    if len(data) < 4:
        raise IDXFormatError(f"{path}: too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    magic = (dtype << 8) | ndim
    if zero != 0 or dtype != _IDX_UBYTE or ndim == 0:
        raise IDXFormatError(f"{path}: bad IDX magic 0x{int.from_bytes(data[:4], 'big'):08x}")
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(f"{path}: IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != size:
        raise IDXFormatError(
            f"{path}: header announces {dims} = {size} bytes, payload has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


# --------------------------------------------------------------------------- API


def _require(name: str, paths) -> None:
    for p in paths:
        if not p.is_file():
            hint = (
                "the package data folder is incomplete (reinstall ss-engine)"
                if _LAYOUT[name][0] is None
                else f"set {ENV_VAR} to the folder holding {_LAYOUT[name][0]}/ "
                f"(currently {os.environ.get(ENV_VAR, 'unset')}), or fetch the files with "
                f"ss_engine.datasets.download_dataset({name!r}, root)"
            )
            raise FileNotFoundError(f"dataset file not found: {p}; {hint}")


def check_available(name: str, root: str | os.PathLike | None = None) -> None:
    """FileNotFoundError (naming the file and the fix) unless every file of ``name`` is
    there; cheap (no reading), for checking a command line before any work starts."""
    key = _canonical(name)
    for split in _SPLIT_PREFIX:
        _require(key, _files(key, split, root)[:2])


def load(name: str, split: str = "train", limit: int | None = None,
         root: str | os.PathLike | None = None) -> Dataset:
    """Load one split as a :class:`Dataset` (the first ``limit`` examples when given)."""
    name = _canonical(name)
    img_path, lbl_path, sums_dir = _files(name, split, root)
    _require(name, (img_path, lbl_path))
    for p in (img_path, lbl_path):
        _verify(p, sums_dir)
    images = read_idx(img_path, _MAGIC_IMAGES)
    labels = read_idx(lbl_path, _MAGIC_LABELS)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXFormatError(f"{img_path}: images have shape {images.shape}, expected (N, 28, 28)")
    if labels.shape[0] != images.shape[0]:
        raise IDXFormatError(
            f"{lbl_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path}"
        )
    if labels.size and int(labels.max()) > 9:
        raise IDXFormatError(f"{lbl_path}: label {int(labels.max())} outside 0..9")
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        images, labels = images[:limit].copy(), labels[:limit].copy()
    images.setflags(write=False)
    labels.setflags(write=False)
    return Dataset(name, split, images, labels)


def load_dataset(name: str, split: str = "train", limit: int | None = None,
                 root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels uint8 (N,))`` of ``name`` in ``split``.

    ``name``: ``'mnist'``, ``'fashion-mnist'`` or ``'mnist-small'`` (shipped subset);
    ``split``: ``'train'`` or ``'test'``. The arrays are read-only.
    """
    ds = load(name, split, limit, root)
    return ds.images, ds.labels


def normalize(images: np.ndarray, standardize: bool = False, dataset: str = "mnist") -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]; with ``standardize``, ``(x - MEAN) / STD`` of ``dataset``."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    if standardize:
        key = _canonical(dataset)
        x = (x - np.float32(MEAN[key])) / np.float32(STD[key])
    return x


def download_dataset(name: str, root: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Fetch the four original archives of ``name`` into ``<root>/<name>/``.

    Each download goes to a temporary file in the target folder and is renamed into
    place only after its MD5 matches the known hash of the original archive. Files
    already present with the right hash are kept. Returns the dataset folder.
    """
    name = _canonical(name)
    if name not in _MIRRORS:
        raise ValueError(f"{name!r} is shipped with the package; nothing to download")
    folder = data_root(root) / _LAYOUT[name][0]
    folder.mkdir(parents=True, exist_ok=True)
    for fname, md5 in _ORIGINAL_MD5[name].items():
        target = folder / fname
        if target.is_file() and hashlib.md5(target.read_bytes(), usedforsecurity=False).hexdigest() == md5:
            continue
        url = _MIRRORS[name] + fname
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
        actual = hashlib.md5(payload, usedforsecurity=False).hexdigest()
        if actual != md5:
            raise ChecksumError(f"{url}: md5 {actual}, expected {md5}; file not written")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{fname}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return folder
