"""Key-based pixel shuffling (PrivDL, ICASSP 2024) and a known-pair attack on it.

Scheme
------
1. The data owner derives a pixel permutation ``perm`` (784 entries) from a secret key.
2. Every image is shuffled, ``x_s[j] = x[perm[j]]``, before it leaves the owner; the cloud
   trains and infers on shuffled images only.
3. "No retraining": a network trained on plain images serves shuffled inputs once its
   first dense layer is permuted with the key, ``W_s = W[:, perm]``, because
   ``W_s @ x_s = sum_j W[:, perm[j]] x[perm[j]] = W @ x``.

Measured: accuracy (a) trained and tested on shuffled data (with key), (b) plain-trained
tested on shuffled data (without key), (c) the permuted plain network on shuffled data.

Attack (known plaintext)
------------------------
Given k pairs (plain, shuffled), pixel ``j`` of the shuffled image is pixel ``i`` of the
plain image only if the two value columns (over the k pairs) are equal. Grouping the 2 x 784
columns by value assigns every shuffled position to its group; a group of size one pins the
pixel. The permutation counts as recovered *exactly* when the estimate unshuffles every
held-out shuffled test image to its plain image (pixels that are zero in every image are
interchangeable and cannot be told apart by anyone, so "exact" is functional).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from baselines.common import (
    Data,
    Stopwatch,
    TrainConfig,
    accuracy,
    key_rng,
    load_data,
    make_model,
    setup_torch,
    train,
    write_json,
)

__all__ = [
    "key_permutation",
    "shuffle_pixels",
    "unshuffle_pixels",
    "permute_first_layer",
    "recover_permutation",
    "pixels_matched",
    "smallest_exact_k",
    "attack",
    "attack_summary",
    "run",
]

SCHEME = "key-pixel-shuffling"


def key_permutation(key: bytes | str | int, d: int = 784) -> np.ndarray:
    """The secret pixel permutation derived from ``key`` (SHA-256 -> PCG64 -> shuffle)."""
    return key_rng(key, "privdl-pixel-shuffle").permutation(d)


def shuffle_pixels(x, perm: np.ndarray):
    """``x_s[..., j] = x[..., perm[j]]`` on flattened images (numpy or torch)."""
    if isinstance(x, torch.Tensor):
        return x[..., torch.as_tensor(perm)]
    return np.asarray(x)[..., perm]


def unshuffle_pixels(x_s, perm: np.ndarray):
    """Inverse of :func:`shuffle_pixels`."""
    inv = np.argsort(perm)
    return shuffle_pixels(x_s, inv)


def permute_first_layer(model: nn.Module, perm: np.ndarray) -> nn.Module:
    """A copy of ``model`` whose first ``nn.Linear`` reads shuffled inputs (no retraining)."""
    model = copy.deepcopy(model)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight.copy_(first.weight[:, torch.as_tensor(perm)])
    return model


def _column_keys(cols: np.ndarray) -> np.ndarray:
    """Two 64-bit polynomial hashes per row of ``cols`` (rows = pixel value columns)."""
    k = cols.shape[1]
    rng = np.random.default_rng(0x5EED)
    w = rng.integers(0, 2**63, size=(k, 2), dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        h = cols.astype(np.uint64) @ w  # wraps mod 2^64
    return h


def recover_permutation(plain: np.ndarray, shuffled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Estimate ``perm`` from k known pairs (``plain``, ``shuffled``: (k, d) arrays).

    Returns ``(perm_est, pinned)``: the estimate (ties resolved in index order) and a
    boolean mask of the shuffled positions whose source pixel is uniquely determined.
    Columns are grouped by a 128-bit hash of their k values (collision odds ~2^-100).
    """
    plain = np.asarray(plain).reshape(len(plain), -1)
    shuffled = np.asarray(shuffled).reshape(len(shuffled), -1)
    k, d = plain.shape
    keys = _column_keys(np.concatenate([plain.T, shuffled.T]))  # (2d, 2)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    gp, gs = group[:d], group[d:]
    order_p = np.argsort(gp, kind="stable")
    order_s = np.argsort(gs, kind="stable")
    if not np.array_equal(gp[order_p], gs[order_s]):
        raise ValueError("the pairs are not related by one pixel permutation")
    perm_est = np.empty(d, dtype=np.int64)
    perm_est[order_s] = order_p
    sizes = np.bincount(gp, minlength=group.max() + 1)
    pinned = sizes[gs] == 1
    return perm_est, pinned


def pixels_matched(plain: np.ndarray, view: np.ndarray) -> int:
    """How many columns of ``view`` equal some column of ``plain`` over all k rows.

    For shuffled images every used pixel matches; for a secret share almost none does.
    """
    plain = np.asarray(plain).reshape(len(plain), -1)
    view = np.asarray(view).reshape(len(view), -1)
    keys_p = {tuple(k) for k in _column_keys(plain.T).tolist()}
    return int(sum(tuple(k) in keys_p for k in _column_keys(view.T).tolist()))


def _restores(perm_est: np.ndarray, perm: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Per test image: does the estimate unshuffle it exactly?"""
    x_s = shuffle_pixels(x_test, perm)
    return np.all(unshuffle_pixels(x_s, perm_est) == x_test, axis=1)


def smallest_exact_k(perm: np.ndarray, x_known: np.ndarray) -> int | None:
    """Smallest k (prefix of ``x_known``) whose pairs pin every pixel the pool ever uses.

    "Uses" = non-zero in at least one image of ``x_known``; the other pixels are zero in
    every known image, so no attacker (and no model) can tell them apart. Binary search
    is valid: more pairs only refine the column groups. ``None`` when the whole pool
    does not suffice (value ties that never break).
    """
    x_s = shuffle_pixels(x_known, perm)
    used_s = (x_known.max(axis=0) > 0)[perm]  # in shuffled coordinates

    def ok(k: int) -> bool:
        _, pinned = recover_permutation(x_known[:k], x_s[:k])
        return bool(pinned[used_s].all())

    lo, hi = 1, len(x_known)
    if not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def attack_summary(atk: dict) -> str:
    """One line for the comparison table; a k the attack did not reach within its pool is
    said so (a quick run's small pool printed "k=None")."""
    most = atk["per_k"][-1]["k"] if atk["per_k"] else 0
    restore = (f"k={atk['k_restore_99pct']} restore >=99% of unseen images exactly"
               if atk["k_restore_99pct"] is not None else
               f"up to k={most} known pairs restore <99% of unseen images exactly")
    exact = (f"all used pixels pinned at k={atk['smallest_k_exact']}"
             if atk["smallest_k_exact"] is not None else
             f"not every used pixel pinned with the {atk['pool_size']} pairs tried")
    pinned = "/".join(str(f["pixels_pinned"]) for f in atk["per_k"][:3])
    return f"k=1/2/5 pairs pin {pinned} of {atk['pixels']} pixels; {restore}; {exact}"


def attack(perm: np.ndarray, x_known: np.ndarray, x_test: np.ndarray,
           ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)) -> dict:
    """Known-pair attack figures: pixels pinned/correct per k and the smallest exact k.

    ``x_known``: uint8 flattened plain images, the attacker's pool (pairs are
    ``x_known[:k]`` and their shuffled versions); ``x_test``: held-out plain images used
    to report how many shuffled images the estimate restores exactly.
    """
    x_known = np.asarray(x_known).reshape(len(x_known), -1)
    x_test = np.asarray(x_test).reshape(len(x_test), -1)
    d = x_known.shape[1]
    x_s = shuffle_pixels(x_known, perm)

    def figures(k: int) -> dict:
        est, pinned = recover_permutation(x_known[:k], x_s[:k])
        return {
            "k": int(k),
            "pixels_pinned": int(pinned.sum()),
            "pixels_correct": int((est == perm).sum()),
            "test_images_restored": float(_restores(est, perm, x_test).mean()),
        }

    per_k = [figures(k) for k in ks if k <= len(x_known)]
    k_restore_99 = next((f["k"] for f in per_k if f["test_images_restored"] >= 0.99), None)
    t0 = time.perf_counter()
    k_exact = smallest_exact_k(perm, x_known)
    seconds = time.perf_counter() - t0
    return {
        "pixels": d,
        "pool_size": len(x_known),
        "per_k": per_k,
        "smallest_k_exact": k_exact,
        "at_smallest_k": figures(k_exact) if k_exact else None,
        "k_restore_99pct": k_restore_99,
        "pixels_unused_by_pool": int((x_known.max(axis=0) == 0).sum()),
        "search_seconds": round(seconds, 3),
        "note": "exact = every pixel that is non-zero in some pool image is pinned to its "
                "true source; pixels zero in all of them are interchangeable",
    }


def run(dataset: str = "mnist", train_limit: int | None = 10000, epochs: int = 3,
        seed: int = 0, json_out=None, test_limit: int | None = None,
        models: tuple[str, ...] = ("network-a",), key: bytes | str | int | None = None,
        attack_ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        attack_pool: int = 5000) -> dict:
    """Train plain and shuffled networks, measure (a)/(b)/(c) and run the attack."""
    gen = setup_torch(seed)
    data: Data = load_data(dataset, train_limit, test_limit)
    key = key if key is not None else f"demo-key-{seed}"
    perm = key_permutation(key, data.x_train.shape[1])
    cfg = TrainConfig(epochs=epochs)

    with Stopwatch() as t_shuffle:
        xs_train = shuffle_pixels(data.x_train, perm)
        xs_test = shuffle_pixels(data.x_test, perm)

    per_model = {}
    for name in models:
        torch.manual_seed(seed)
        plain = make_model(name)
        with Stopwatch() as t_plain:
            train(plain, data.x_train, data.y_train, cfg, gen)
        torch.manual_seed(seed)
        keyed = make_model(name)
        with Stopwatch() as t_keyed:
            train(keyed, xs_train, data.y_train, cfg, gen)
        entry = {
            "plain": accuracy(plain, data.x_test, data.y_test),
            "with_key": accuracy(keyed, xs_test, data.y_test),
            "without_key": accuracy(plain, xs_test, data.y_test),
            "no_retraining": None,
            "train_seconds_plain": round(t_plain.seconds, 3),
            "train_seconds_shuffled": round(t_keyed.seconds, 3),
        }
        if isinstance(plain[0], nn.Linear):
            entry["no_retraining"] = accuracy(permute_first_layer(plain, perm), xs_test, data.y_test)
        per_model[name] = entry

    # the attack works on the uint8 images the owner holds
    x_known = np.rint(data.x_train.numpy() * 255).astype(np.uint8)
    x_test_u8 = np.rint(data.x_test.numpy() * 255).astype(np.uint8)
    atk = attack(perm, x_known[:attack_pool], x_test_u8, attack_ks)

    main = per_model[models[0]]
    result = {
        "scheme": SCHEME,
        "dataset": dataset,
        "train_size": len(data.x_train),
        "test_size": len(data.x_test),
        "epochs": epochs,
        "seed": seed,
        "models": per_model,
        "accuracy": main["with_key"],
        "accuracy_plain": main["plain"],
        "accuracy_without_key": main["without_key"],
        "time_ratio_vs_plain": round(
            (main["train_seconds_shuffled"] + t_shuffle.seconds) / max(main["train_seconds_plain"], 1e-9), 3),
        "owner_transform_seconds": round(t_shuffle.seconds, 4),
        "cloud_sees": "every image with its pixels permuted by one fixed secret permutation",
        "attack": atk,
        "attack_summary": attack_summary(atk),
        "trust": "secret key (permutation) held by the data owner; one cloud",
    }
    write_json(result, json_out)
    return result
