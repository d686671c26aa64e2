"""Synthetic stand-ins for two classic small data sets, generated (nothing is downloaded).

* ``cancer.csv``: 569 patients x 30 numeric features and a 0/1 ``diagnosis``, shaped like the
  Wisconsin breast-cancer table (ten measurements -- radius, texture, perimeter, area,
  smoothness, ... -- each as mean, standard error and worst value, on their own scales,
  correlated within a patient; 37% malignant, classes overlapping).
* ``digits.npz``: 1,797 grey 8x8 images of the digits 0-9 with values 0..16 (``x`` (N, 8, 8),
  ``y`` (N,)), drawn from stroke templates with random shifts, thickness and noise, like
  the UCI optical digits.

    python -m examples.byom --out byom        # writes byom/cancer.csv and byom/digits.npz
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

__all__ = ["cancer_like", "digits_like", "write_csv", "write_npz", "main", "CANCER_COLUMNS"]

_MEASURES = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
             "concave_points", "symmetry", "fractal_dimension"]
CANCER_COLUMNS = [f"{m}_{kind}" for kind in ("mean", "se", "worst") for m in _MEASURES]
# benign mean, malignant mean (of the "mean" measurements); se and worst scale from them
_BENIGN = np.array([12.1, 17.9, 78.1, 463.0, 0.092, 0.080, 0.046, 0.026, 0.174, 0.063])
_MALIGNANT = np.array([17.5, 21.6, 115.4, 978.0, 0.103, 0.145, 0.161, 0.088, 0.193, 0.063])


def cancer_like(n: int = 569, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 30) float, y (n,) 0/1): correlated measurements, overlapping classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.373).astype(np.int64)
    size = rng.normal(0, 1, n) + 0.9 * y                  # one latent "tumour size" per patient
    shape = rng.normal(0, 1, n) + 0.7 * y                 # one latent "irregularity"
    t = np.clip((size - 0.3) / 1.6, -1.5, 2.5)[:, None]
    base = _BENIGN + (_MALIGNANT - _BENIGN) * t * 0.75
    base[:, 4:] = _BENIGN[4:] + (_MALIGNANT[4:] - _BENIGN[4:]) * np.clip(shape / 1.2, -1, 2.5)[:, None] * 0.8
    mean = base * np.exp(rng.normal(0, 0.18, (n, 10)))
    se = mean * np.array([0.03, 0.06, 0.03, 0.06, 0.07, 0.2, 0.3, 0.15, 0.1, 0.06]) \
        * np.exp(rng.normal(0, 0.35, (n, 10)))
    worst = mean * (1.15 + 0.1 * np.abs(rng.normal(0, 1, (n, 10))) + 0.15 * y[:, None])
    x = np.concatenate([mean, se, worst], axis=1)
    x[:, [0, 2, 10, 12, 20, 22]] = np.round(x[:, [0, 2, 10, 12, 20, 22]], 3)
    return np.abs(x), y


_GLYPHS = {  # 5x7 strokes of each digit
    0: ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    1: ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    2: ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    3: ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    4: ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    5: ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    6: ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    7: ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    8: ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    9: ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
}


def digits_like(n: int = 1797, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 8, 8) float in 0..16, y (n,) 0..9): shifted, blurred, noisy digit strokes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.zeros((n, 8, 8))
    for i, d in enumerate(y):
        g = np.array([[int(c) for c in row] for row in _GLYPHS[int(d)]], float)
        img = np.zeros((10, 10))
        dy, dx = rng.integers(0, 3), rng.integers(0, 4)
        img[1 + dy:8 + dy, 1 + dx:6 + dx] = g
        if rng.random() < 0.5:  # thicker strokes
            img = np.maximum(img, np.roll(img, 1, axis=1) * 0.7)
        blur = (img + 0.25 * (np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1)
                              + np.roll(img, -1, 1)))
        small = blur[1:9, 1:9] * rng.uniform(9, 14) + rng.normal(0, 1.6, (8, 8))
        x[i] = np.clip(np.round(small), 0, 16)
    return x, y


def write_csv(path, x: np.ndarray, y: np.ndarray, columns=None, label: str = "diagnosis") -> Path:
    columns = columns or [f"f{i}" for i in range(x.shape[1])]
    p = Path(path)
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns) + [label])
        for row, t in zip(x, y):
            w.writerow([f"{v:.6g}" for v in row] + [int(t)])
    return p


def write_npz(path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
    return Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="byom", help="folder to write cancer.csv and digits.npz into")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = cancer_like(seed=args.seed)
    print(write_csv(out / "cancer.csv", x, y, CANCER_COLUMNS))
    x, y = digits_like(seed=args.seed)
    print(write_npz(out / "digits.npz", x, y))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
