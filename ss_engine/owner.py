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

__all__ = ["encode_images", "encode_inputs", "encode_labels", "encode_targets", "data_bound",
           "DataBoundError", "share_arrays", "reconstruct_params", "reconstruct_predictions",
           "reconstruct_outputs"]


class DataBoundError(ValueError):
    """Normalised data too large for fixed-point training."""


def data_bound(fixed: FixedPointConfig) -> float:
    """Largest |value| of a (normalised) input the owner shares: 2^((62 - 2f) // 2).

    A first-layer product x w is formed with 2f fractional bits and must stay below
    2^(62 - 2f) in real units for the truncation to be exact (see ``protocols.truncation``);
    half of that headroom goes to the data, half to |w| times the fan-in.  32,768 at f = 16.
    """
    return float(2 ** ((62 - 2 * fixed.frac_bits) // 2))


def _check_bound(x: np.ndarray, fixed: FixedPointConfig, what: str) -> None:
    if not x.size:
        return
    if not np.all(np.isfinite(x)):
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataBoundError(f"{what}: sample {row} holds NaN or infinity")
    bound = data_bound(fixed)
    big = np.abs(x) >= bound
    if big.any():
        row, col = (int(v) for v in np.argwhere(big)[0][:2])
        raise DataBoundError(
            f"{what}: value {float(x[row, col]):.6g} (sample {row}, feature {col}) exceeds the "
            f"fixed-point data bound {bound:g} at frac_bits={fixed.frac_bits}; normalise the data "
            "(--normalize standard or unit)")


def encode_inputs(x: np.ndarray, fixed: FixedPointConfig, what: str = "inputs") -> np.ndarray:
    """Normalised float samples (N, ...) -> fixed-point (N, features); DataBoundError when a
    value is not finite or reaches ``data_bound``."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    _check_bound(x, fixed, what)
    return encode(x, fixed)


#: the MNIST-shaped name kept for callers that share images
encode_images = encode_inputs


def encode_labels(labels: np.ndarray, fixed: FixedPointConfig, num_classes: int = 10) -> np.ndarray:
    """Integer labels -> fixed-point one-hot (N, num_classes); labels are secret too."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    onehot = np.zeros((len(labels), num_classes), np.float64)
    onehot[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return encode(onehot, fixed)


def encode_targets(targets: np.ndarray, fixed: FixedPointConfig, outputs: int = 1) -> np.ndarray:
    """Float regression targets (N,) or (N, outputs) -> fixed-point (N, outputs)."""
    t = np.asarray(targets, np.float64).reshape(len(targets), -1)
    if t.shape[1] != outputs:
        raise ValueError(f"targets have {t.shape[1]} values per sample, the model {outputs} outputs")
    _check_bound(t, fixed, "targets")
    return encode(t, fixed)


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


def reconstruct_outputs(out0: np.ndarray, out1: np.ndarray, fixed: FixedPointConfig) -> np.ndarray:
    """Regression outputs (N, outputs) from the two shares of the model's outputs."""
    return decode(np.asarray(out0) + np.asarray(out1), fixed)
