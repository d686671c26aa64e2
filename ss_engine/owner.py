"""Data-owner and trainer side: encode and share data and models, reconstruct results.

Nothing here talks to a server; the local runner and ``client/`` both call it, so what a
party receives is the same in both runtimes.  All sharing uses the AES-CTR PRG.
"""
from __future__ import annotations

import numpy as np

from .config import FixedPointConfig
from .encoding import decode, encode
from .prg import PRG
from .sharing import share

__all__ = ["encode_images", "encode_labels", "share_arrays", "reconstruct_params",
           "reconstruct_predictions", "NUM_CLASSES"]

NUM_CLASSES = 10


def encode_images(images: np.ndarray, fixed: FixedPointConfig) -> np.ndarray:
    """Preprocessed float images -> fixed-point, flattened to (N, pixels)."""
    x = np.asarray(images, np.float64)
    return encode(x.reshape(len(x), -1), fixed)


def encode_labels(labels: np.ndarray, fixed: FixedPointConfig) -> np.ndarray:
    """Integer labels -> fixed-point one-hot (N, 10); labels are secret too."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be in 0..{NUM_CLASSES - 1}")
    onehot = np.zeros((len(labels), NUM_CLASSES), np.float64)
    onehot[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return encode(onehot, fixed)


def share_arrays(arrays: dict[str, np.ndarray], prg: PRG) -> tuple[dict, dict]:
    s0, s1 = {}, {}
    for k, v in arrays.items():
        s0[k], s1[k] = share(v, prg)
    return s0, s1


def reconstruct_params(shares0: dict, shares1: dict, fixed: FixedPointConfig) -> dict[str, np.ndarray]:
    if set(shares0) != set(shares1):
        raise ValueError("the two servers returned different parameter sets")
    return {k: decode(shares0[k] + shares1[k], fixed).astype(np.float32) for k in shares0}


def reconstruct_predictions(onehot0: np.ndarray, onehot1: np.ndarray) -> np.ndarray:
    """Predicted classes from the two shares of the integer one-hot argmax."""
    return np.argmax(np.asarray(onehot0) + np.asarray(onehot1), axis=1)
