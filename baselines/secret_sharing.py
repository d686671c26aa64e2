"""The engine as a row of the comparison: the baselines' attacks against one server's shares.

What a server sees is one additive share over Z_2^64 of the fixed-point images
(``ss_engine.encoding.encode`` + ``ss_engine.sharing.share``): server 0 holds PRG output,
server 1 holds ``x - s0``. Each alone is uniform and independent of the images. This module
runs, against server 1's view, the same attacks that break the lighter schemes:

* the shuffle attack's column matching (how many share columns equal some pixel column);
* the morphing attack's least squares from k known (image, share) pairs;
* a classifier trained on k known (share, label) pairs, and a plain-MNIST classifier applied
  to the decoded share (as in the GAN attack);
* a chi-square independence test between a pixel being ink/background and the top 4 bits of
  its share.

All should be at chance. ``run(..., engine_train=True)`` also trains network-a with the
engine (``ss_engine.training.train_party`` on a ``LocalRuntime``) next to its float twin, for
the accuracy and time columns of the comparison.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from baselines.common import (
    Stopwatch,
    TrainConfig,
    accuracy,
    load_data,
    lstsq,
    matmul64,
    network_a,
    setup_torch,
    train,
    write_json,
)
from baselines.shuffle import pixels_matched
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.encoding import decode, encode
from ss_engine.description import init_params
from ss_engine.owner import encode_labels, reconstruct_params, share_arrays
from ss_engine.prg import PRG
from ss_engine.sharing import share
from ss_engine.simulate import LocalRuntime
from ss_engine.job import TrainJob
from ss_engine.training import PartyState, train_party
from ss_engine.twin import evaluate, train_twin

__all__ = ["server_view", "independence_test", "attack_shares", "engine_training", "run"]

SCHEME = "secret-sharing (ss-engine)"


def _encode_u8(images_u8: np.ndarray, fixed: FixedPointConfig) -> np.ndarray:
    """uint8 images -> fixed-point pixels in [0, 1], (N, 784) (what the owner shares)."""
    x = np.asarray(images_u8, np.float64).reshape(len(images_u8), -1) / 255.0
    return encode(x, fixed)


def server_view(images_u8: np.ndarray, fixed: FixedPointConfig, prg: PRG, rank: int = 1) -> np.ndarray:
    """One server's share (int64, (N, 784)) of the owner's fixed-point images."""
    s0, s1 = share(_encode_u8(images_u8, fixed), prg)
    return s0 if rank == 0 else s1


def _features(view: np.ndarray) -> torch.Tensor:
    """A share as floats in [-1, 1) (the whole ring mapped linearly)."""
    return torch.from_numpy((view.astype(np.float64) / 2.0**63).astype(np.float32))


def _chi2_sf(stat: float, df: int) -> float:
    """Upper tail of chi^2_df (Wilson-Hilferty; accurate to ~1e-3 for df >= 3)."""
    if df == 1:
        return math.erfc(math.sqrt(stat / 2))
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def independence_test(pixels_u8: np.ndarray, view: np.ndarray, bins: int = 16) -> dict:
    """Chi-square test: is the share's top ``log2(bins)`` bits independent of ink vs background?"""
    top = (view.astype(np.uint64) >> np.uint64(64 - int(math.log2(bins)))).astype(np.int64).ravel()
    ink = (np.asarray(pixels_u8).ravel() > 0).astype(np.int64)
    table = np.zeros((2, bins))
    np.add.at(table, (ink, top), 1)
    table = table[:, table.sum(0) > 0][table.sum(1) > 0]  # drop empty rows/columns
    if min(table.shape) < 2:
        return {"chi2": 0.0, "df": 0, "p_value": 1.0, "cells": int(table.sum())}
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    return {"chi2": stat, "df": df, "p_value": _chi2_sf(stat, df), "cells": int(table.sum())}


def attack_shares(x_known_u8: np.ndarray, y_known: np.ndarray, x_test_u8: np.ndarray,
                  y_test: np.ndarray, fixed: FixedPointConfig, gen: torch.Generator,
                  plain_model: torch.nn.Module | None = None, epochs: int = 3) -> dict:
    """Every baseline attack against server 1's shares, with k = ``len(x_known_u8)`` pairs."""
    prg = PRG.from_os_random()
    k = len(x_known_u8)
    xk = x_known_u8.reshape(k, -1)
    xt = x_test_u8.reshape(len(x_test_u8), -1)
    vk, vt = server_view(xk, fixed, prg), server_view(xt, fixed, prg)

    # shuffle attack: column matching
    matched = pixels_matched(xk, vk)

    # morphing attack: least squares x ~ A v (+ bias), against predicting the mean image
    fk, ft = _features(vk).double().numpy(), _features(vt).double().numpy()
    ones_k, ones_t = np.ones((k, 1)), np.ones((len(ft), 1))
    sol, _ = lstsq(np.hstack([fk, ones_k]), xk / 255.0)
    rec = matmul64(np.hstack([ft, ones_t]), sol)
    ref = xt / 255.0
    ls_err = float(np.linalg.norm(rec - ref) / np.linalg.norm(ref))
    mean_err = float(np.linalg.norm(ref - (xk / 255.0).mean(0)) / np.linalg.norm(ref))

    # classifier on known (share, label) pairs
    clf = network_a()
    train(clf, _features(vk), torch.from_numpy(y_known.astype(np.int64)), TrainConfig(epochs=epochs), gen)
    yt = torch.from_numpy(y_test.astype(np.int64))
    learned_acc = accuracy(clf, _features(vt), yt)
    majority = float(np.mean(y_test == np.bincount(y_known, minlength=10).argmax()))

    plain_on_share = None
    if plain_model is not None:
        decoded = torch.from_numpy(decode(vt, fixed).astype(np.float32))
        plain_on_share = accuracy(plain_model, decoded, yt)

    return {
        "k_known_pairs": k,
        "shuffle_pixels_matched": matched,
        "morphing_lstsq_test_rel_error": ls_err,
        "mean_image_rel_error": mean_err,
        "learned_classifier_accuracy": learned_acc,
        "plain_classifier_on_share_accuracy": plain_on_share,
        "majority_class_accuracy": majority,
        "chance": 0.1,
        "independence": independence_test(xt, vt),
    }


def engine_training(x_train_u8: np.ndarray, y_train: np.ndarray, x_test_u8: np.ndarray,
                    y_test: np.ndarray, epochs: int, seed: int, frac_bits: int = 16,
                    batch_size: int = 128, lr: float = 0.1) -> dict:
    """Train network-a with the engine on shares and its float twin on the same schedule."""
    fixed = FixedPointConfig(frac_bits=frac_bits)
    config = EngineConfig(fixed=fixed)
    job = TrainJob(model="network-a", epochs=epochs, batch_size=batch_size, lr=lr,
                   momentum=0.9, shuffle_seed=seed)
    init = init_params("network-a", seed)
    prg = PRG.from_os_random()
    p0, p1 = share_arrays({k: encode(v, fixed) for k, v in init.items()}, prg)
    x0, x1 = share(_encode_u8(x_train_u8, fixed), prg)
    y0, y1 = share(encode_labels(y_train, fixed), prg)
    rt = LocalRuntime(config)
    with Stopwatch() as t:
        st0, st1 = rt.run(train_party, (x0, y0, job, PartyState(p0)), (x1, y1, job, PartyState(p1)))
    params = reconstruct_params(st0.params, st1.params, fixed)
    x_flat = x_train_u8.reshape(len(x_train_u8), -1) / 255.0
    xt_flat = x_test_u8.reshape(len(x_test_u8), -1) / 255.0
    # same intra-op thread count as the baselines (train_twin would otherwise set 2)
    twin = train_twin("network-a", init, x_flat, y_train, job, threads=torch.get_num_threads())
    return {
        "accuracy_secure": evaluate("network-a", params, xt_flat, y_test),
        "accuracy_twin": evaluate("network-a", twin["params"], xt_flat, y_test),
        "train_seconds_secure": round(t.seconds, 3),
        "train_seconds_twin": round(twin["train_seconds"], 3),
        "time_ratio_vs_plain": round(t.seconds / max(twin["train_seconds"], 1e-9), 1),
        "job": job.to_dict(),
        "train_size": int(len(x_train_u8)),
        "stats": rt.stats(),
    }


def run(dataset: str = "mnist", train_limit: int | None = 10000, epochs: int = 3,
        seed: int = 0, json_out=None, test_limit: int | None = 2000, known_pairs: int = 5000,
        frac_bits: int = 16, engine_train: bool = False, engine_train_limit: int = 2000,
        engine_epochs: int = 1, engine_batch_size: int = 128) -> dict:
    """Attacks on one server's shares; with ``engine_train`` also the engine's own training."""
    gen = setup_torch(seed)
    data = load_data(dataset, train_limit, test_limit)
    fixed = FixedPointConfig(frac_bits=frac_bits)
    torch.manual_seed(seed)
    plain = network_a()
    with Stopwatch() as t_plain:
        train(plain, data.x_train, data.y_train, TrainConfig(epochs=epochs), gen)
    plain_acc = accuracy(plain, data.x_test, data.y_test)

    x_u8 = np.rint(data.x_train.numpy() * 255).astype(np.uint8)
    xt_u8 = np.rint(data.x_test.numpy() * 255).astype(np.uint8)
    y, yt = data.y_train.numpy().astype(np.uint8), data.y_test.numpy().astype(np.uint8)
    k = min(known_pairs, len(x_u8))
    atk = attack_shares(x_u8[:k], y[:k], xt_u8, yt, fixed, gen, plain, epochs)

    engine = None
    if engine_train:
        n = min(engine_train_limit, len(x_u8))
        engine = engine_training(x_u8[:n], y[:n], xt_u8, yt, engine_epochs, seed, frac_bits,
                                 engine_batch_size)

    result = {
        "scheme": SCHEME,
        "dataset": dataset,
        "train_size": len(data.x_train),
        "test_size": len(data.x_test),
        "seed": seed,
        "accuracy": engine["accuracy_secure"] if engine else None,
        "accuracy_plain": engine["accuracy_twin"] if engine else plain_acc,
        "accuracy_without_key": atk["plain_classifier_on_share_accuracy"],
        "time_ratio_vs_plain": engine["time_ratio_vs_plain"] if engine else None,
        "engine_training": engine,
        "train_seconds_plain": round(t_plain.seconds, 3),
        "cloud_sees": "each server: a uniformly random share over Z_2^64 of every pixel",
        "attack": atk,
        "attack_summary": (
            f"k={atk['k_known_pairs']} known pairs: {atk['shuffle_pixels_matched']} pixels matched, "
            f"least-squares error {atk['morphing_lstsq_test_rel_error']:.2f} (mean image "
            f"{atk['mean_image_rel_error']:.2f}), learned classifier "
            f"{atk['learned_classifier_accuracy']:.1%} (majority {atk['majority_class_accuracy']:.1%}), "
            f"independence p={atk['independence']['p_value']:.2f}"),
        "trust": "two non-colluding servers (and a dealer that colludes with neither)",
    }
    write_json(result, json_out)
    return result
