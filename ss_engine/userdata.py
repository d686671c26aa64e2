"""The data owner's data set: a built-in name, a ``.npz`` or a ``.csv``, split and normalised.

Everything here runs in plaintext on the owner's machine, before anything is shared.

Sources
-------
* a built-in name (``mnist``, ``fashion-mnist``, ``mnist-small``: :mod:`ss_engine.datasets`),
  with its official train/test split;
* an :class:`ArraySource`: arrays held in memory (``ss_engine.train`` from Python), checked
  as an ``.npz``'s are;
* ``PATH.npz`` holding arrays ``x`` (N, ...) of numbers and ``y`` (N,) labels or targets;
* ``PATH.csv`` with a header row and numeric columns; ``label_column`` names the labels
  (or targets), every other column is a feature.

Without a separate test file (``test``) the last ``test_split`` fraction (default 0.2) of a
public, seeded permutation is held out.  Classification labels must be integers 0..k-1.

Normalisation (the owner's, saved with the exported model)
----------------------------------------------------------
``x' = (x - shift) * scale`` per feature, in float32, with statistics of the training part:
``standard`` (mean and standard deviation), ``unit`` (minimum and range, to [0, 1]) or
``none``.  Statistics are per feature for flat samples, per channel for (C, H, W) samples
and over all pixels for (H, W) samples; a constant feature keeps scale 1.  The built-in
image sets use their published pixel statistics (``datasets.MEAN``/``STD``; ``unit`` is
x / 255).  Every bad file gets a one-line :class:`DataError` naming the file, row or column.
"""
from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets

__all__ = ["DataError", "Normalizer", "DataSet", "RawData", "ArraySource", "read_data", "fit_data",
           "load_data", "fit_normalizer", "NORMALIZE", "DEFAULT_TEST_SPLIT"]

NORMALIZE = ("standard", "unit", "none")
DEFAULT_TEST_SPLIT = 0.2


class DataError(ValueError):
    """A data file cannot be used as given (the message names the file, row or column)."""


@dataclass(frozen=True, eq=False)
class Normalizer:
    """``(x - shift) * scale`` on flattened samples, float32 (shift, scale: (features,))."""

    kind: str
    shift: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, np.float32).reshape(len(x), -1)
        return (flat - self.shift) * self.scale

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}


@dataclass(frozen=True, eq=False)
class DataSet:
    """Normalised float32 samples, flattened (N, features), and labels or targets."""

    name: str
    sample_shape: tuple          # one raw sample's shape
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normalizer: Normalizer
    raw_test: np.ndarray         # the test samples before normalisation (for export checks)


def _per_feature(x: np.ndarray, sample_shape: tuple, stat) -> np.ndarray:
    """``stat`` over the axes that share a statistic, broadcast back to (features,)."""
    a = np.asarray(x, np.float64).reshape((len(x),) + sample_shape)
    if len(sample_shape) == 1:
        axes = (0,)
    elif len(sample_shape) == 3:
        axes = (0, 2, 3)
    else:
        axes = tuple(range(a.ndim))
    v = stat(a, axis=axes, keepdims=True)
    return np.broadcast_to(v, (1,) + sample_shape).reshape(-1)


def fit_normalizer(kind: str, x_train: np.ndarray, sample_shape: tuple,
                   builtin: str | None = None) -> Normalizer:
    if kind not in NORMALIZE:
        raise DataError(f"normalize must be one of {', '.join(NORMALIZE)}, got {kind!r}")
    n = math.prod(sample_shape)
    if kind == "none":
        shift, scale = np.zeros(n), np.ones(n)
    elif builtin is not None:  # uint8 pixels with published statistics
        key = datasets._canonical(builtin)
        if kind == "unit":
            shift, scale = np.zeros(n), np.full(n, 1 / 255.0)
        else:
            shift = np.full(n, 255.0 * datasets.MEAN[key])
            scale = np.full(n, 1.0 / (255.0 * datasets.STD[key]))
    elif kind == "standard":
        shift = _per_feature(x_train, sample_shape, np.mean)
        std = _per_feature(x_train, sample_shape, np.std)
        scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    else:
        lo = _per_feature(x_train, sample_shape, np.min)
        span = _per_feature(x_train, sample_shape, np.max) - lo
        shift, scale = lo, np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
    return Normalizer(kind, shift.astype(np.float32), scale.astype(np.float32))


@dataclass(frozen=True, eq=False)
class ArraySource:
    """A data set given as arrays (numpy, or anything ``np.asarray`` takes, such as CPU
    torch tensors): samples ``x`` (N, ...) and labels or targets ``y`` (N,)."""

    x: object
    y: object
    name: str = "arrays"

    def __str__(self) -> str:
        return self.name


# -- readers --------------------------------------------------------------------------------
def _checked_arrays(x, y, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(f"{where}: 'x' and 'y' must be numeric arrays, got {x.dtype} and {y.dtype}")
    if x.ndim < 2:
        raise DataError(f"{where}: 'x' must have a sample axis and at least one feature axis, "
                        f"got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    bad = ~np.isfinite(x.reshape(len(x), -1).astype(np.float64)).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: sample {int(np.argmax(bad))} of 'x' holds NaN or infinity")
    return x, y


def _read_arrays(src: ArraySource) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = np.asarray(src.x), np.asarray(src.y)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{src.name}: not numeric arrays ({exc})") from None
    return _checked_arrays(x, y, src.name)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = sorted(f.files)
            if "x" not in keys or "y" not in keys:
                raise DataError(f"{path}: an .npz data set needs arrays 'x' and 'y'; it holds {keys}")
            x, y = f["x"], f["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return _checked_arrays(x, y, str(path))


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not label_column:
        raise DataError(f"{path}: a CSV data set needs --label-column NAME")
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (a header row is needed)")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no column {label_column!r}; columns: {', '.join(header)}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header names a column twice")
    li = header.index(label_column)
    data = []
    for r, row in enumerate(rows[1:], start=2):       # row numbers as an editor shows them
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: row {r} has {len(row)} fields, the header {len(header)}")
        vals = []
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{path}: row {r}, column {header[c]!r}: {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{path}: row {r}, column {header[c]!r}: {cell!r} is not a finite number")
            vals.append(v)
        data.append(vals)
    if not data:
        raise DataError(f"{path}: no data rows after the header")
    a = np.array(data, np.float64)
    return np.delete(a, li, axis=1), a[:, li]


def _read(source, label_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(source, ArraySource):
        return _read_arrays(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{source}: no such file (and not a built-in data set: "
                        f"{', '.join(datasets.DATASETS)})")
    if path.suffix.lower() == ".npz":
        return _read_npz(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, label_column)
    raise DataError(f"{source}: unknown data format (use .npz with arrays x and y, or .csv)")


def _labels(y: np.ndarray, where: str, task: str, outputs: int, column: str | None) -> np.ndarray:
    col = f" in column {column!r}" if column else ""
    if task == "regression":
        t = np.asarray(y, np.float64).reshape(len(y), -1)
        if t.shape[1] != outputs:
            raise DataError(f"{where}: {t.shape[1]} target values per sample{col}, but the model "
                            f"has {outputs} outputs")
        return t.astype(np.float32)
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: classification labels must be one integer per sample, got shape {y.shape}")
    yf = y.astype(np.float64)
    if not np.all(yf == np.round(yf)):
        i = int(np.argmax(yf != np.round(yf)))
        raise DataError(f"{where}: label {float(yf[i]):g} of sample {i}{col} is not an integer "
                        "(use --task regression for float targets)")
    yi = yf.astype(np.int64)
    if yi.size and (yi.min() < 0 or yi.max() >= outputs):
        raise DataError(f"{where}: labels{col} must be 0..{outputs - 1} (the model has {outputs} "
                        f"outputs); found {yi.min()}..{yi.max()}")
    return yi


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < fraction < 1:
        raise DataError(f"test split must be a fraction in (0, 1), got {fraction}")
    order = np.random.default_rng([int(seed), 0x5D17]).permutation(n)   # public, seeded
    n_test = max(1, int(round(n * fraction)))
    if n_test >= n:
        raise DataError(f"{n} samples cannot be split into training and test parts")
    return np.sort(order[:n - n_test]), np.sort(order[n - n_test:])


@dataclass(frozen=True, eq=False)
class RawData:
    """A data set as read, before its labels are checked against a model and normalised."""

    name: str
    builtin: str | None
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    where_train: str
    where_test: str
    label_column: str | None

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


def read_data(source, *, label_column: str | None = None, test=None,
              test_split: float | None = None, train_limit: int | None = None,
              test_limit: int | None = None, seed: int = 0) -> RawData:
    """Read a built-in set, a file or an :class:`ArraySource` (and its test part, from
    ``test``: a file or an ArraySource); DataError on a bad file or array."""
    builtin = None
    try:
        builtin = datasets._canonical(source) if isinstance(source, str) else None
    except ValueError:
        pass
    if builtin is not None:
        if test or test_split is not None or label_column:
            raise DataError(f"{source} is a built-in data set with its own test split; "
                            "--test, --test-split and --label-column apply to files")
        xtr, ytr = datasets.load_dataset(builtin, "train", train_limit)
        xte, yte = datasets.load_dataset(builtin, "test", test_limit)
        return RawData(builtin, builtin, xtr, ytr, xte, yte, builtin, builtin, None)
    x, y = _read(source, label_column)
    if test:
        if test_split is not None:
            raise DataError("give either --test or --test-split, not both")
        xtr, ytr = x, y
        xte, yte = _read(test, label_column)
        where_te = test
        if xte.shape[1:] != xtr.shape[1:]:
            raise DataError(f"{test}: samples have shape {xte.shape[1:]}, the training file's "
                            f"{xtr.shape[1:]}")
    else:
        tr, te = _split(len(x), DEFAULT_TEST_SPLIT if test_split is None else test_split, seed)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        where_te = f"{source} (test split)"
    if train_limit is not None:
        xtr, ytr = xtr[:train_limit], ytr[:train_limit]
    if test_limit is not None:
        xte, yte = xte[:test_limit], yte[:test_limit]
    if len(xtr) == 0:
        raise DataError(f"{source}: no training samples")
    name = source.name if isinstance(source, ArraySource) else Path(source).name
    return RawData(name, None, xtr, ytr, xte, yte, str(source), str(where_te), label_column)


def fit_data(raw: RawData, *, input_shape: tuple, outputs: int, task: str = "classification",
             normalize: str = "standard") -> DataSet:
    """Check ``raw`` against a model (``input_shape``, ``outputs``), normalise it."""
    sample_shape = raw.sample_shape
    if math.prod(sample_shape) != math.prod(input_shape):
        raise DataError(f"{raw.where_train}: samples have shape {sample_shape} "
                        f"({math.prod(sample_shape)} values); the model takes {tuple(input_shape)} "
                        f"({math.prod(input_shape)} values)")
    ytr = _labels(raw.y_train, raw.where_train, task, outputs, raw.label_column)
    yte = _labels(raw.y_test, raw.where_test, task, outputs, raw.label_column)
    norm = fit_normalizer(normalize, raw.x_train, sample_shape, raw.builtin)
    raw_test = np.asarray(raw.x_test, np.float32).reshape(len(raw.x_test), -1)
    return DataSet(raw.name, sample_shape, norm.apply(raw.x_train), ytr, norm.apply(raw.x_test),
                   yte, norm, raw_test)


def load_data(source: str, *, input_shape: tuple, outputs: int, task: str = "classification",
              normalize: str = "standard", **read) -> DataSet:
    """``read_data`` then ``fit_data``."""
    return fit_data(read_data(source, **read), input_shape=input_shape, outputs=outputs,
                    task=task, normalize=normalize)
