"""Matrix morphing with an augmented first layer (MoLe) and a least-squares attack on it.

Scheme
------
1. The data owner draws a secret invertible matrix ``M`` from a key (``M = Q1 diag(s) Q2``
   with Haar-random orthogonal ``Q1, Q2`` and singular values ``s`` in ``[1/e, e]``, so the
   condition number is at most ``e^2`` and float32 stays accurate). ``block=None`` morphs the
   whole flattened image (d = 784); ``block=p`` applies the same ``p*p`` matrix to every
   ``p x p`` patch, as MoLe does per data block. Either way the whole map is one 784 x 784
   operator ``T`` and a morphed image is ``y = T x``.
2. Augmented layer: the developer's first dense layer ``W`` becomes ``W' = W T^{-1}``
   (computed by the owner in float64), so ``W' y = W x``: the network runs on morphed data
   with no loss of accuracy and no retraining.

Measured: accuracy of the augmented network on morphed data vs the plain network on plain
data (lossless within float32), the plain network on morphed data (no key), a network
trained from scratch on morphed data, and the owner/cloud compute and transfer overhead.

Attack (known plaintext)
------------------------
From k pairs ``(x_i, y_i)`` the attacker solves ``min_A sum ||A y_i - x_i||^2`` (least
squares, minimum norm) and applies ``A`` to unseen morphed images. Once the known inputs
span the space the test inputs live in, ``A = T^{-1}`` on that space and the recovery is
exact; below that the error is the part of each image outside the span of the known ones.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from baselines.common import (
    Stopwatch,
    TrainConfig,
    accuracy,
    key_rng,
    load_data,
    lstsq,
    matmul64,
    network_a,
    predict,
    setup_torch,
    train,
    write_json,
)

__all__ = [
    "morphing_matrix",
    "morphing_operator",
    "morph",
    "augment_first_layer",
    "recover_inverse",
    "attack",
    "run",
]

SCHEME = "matrix-morphing"
SIDE = 28
EXACT_RTOL = 1e-6


def _haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = torch.linalg.qr(torch.from_numpy(rng.standard_normal((n, n))))
    return (q * torch.sign(torch.diagonal(r))).numpy()


def morphing_matrix(key: bytes | str | int, n: int) -> np.ndarray:
    """The secret ``n x n`` morphing matrix (float64), condition number <= e^2."""
    rng = key_rng(key, f"mole-morphing-{n}")
    s = np.exp(rng.uniform(-1.0, 1.0, size=n))
    return matmul64(_haar_orthogonal(rng, n) * s, _haar_orthogonal(rng, n))


def _patch_order(block: int, side: int = SIDE) -> np.ndarray:
    """Pixel indices listed patch by patch (row-major patches, row-major inside)."""
    if side % block:
        raise ValueError(f"block {block} does not divide the image side {side}")
    idx = np.arange(side * side).reshape(side // block, block, side // block, block)
    return idx.transpose(0, 2, 1, 3).reshape(-1)


def morphing_operator(key: bytes | str | int, block: int | None = None, d: int = SIDE * SIDE) -> np.ndarray:
    """The 784 x 784 operator ``T`` (float64) with ``morph(x) = T x``."""
    if block is None:
        return morphing_matrix(key, d)
    m = morphing_matrix(key, block * block)
    order = _patch_order(block)
    t_patch = np.kron(np.eye(d // (block * block)), m)  # acts on patch-ordered pixels
    t = np.zeros((d, d))
    t[np.ix_(order, order)] = t_patch
    return t


def morph(x: torch.Tensor | np.ndarray, t: np.ndarray) -> torch.Tensor:
    """Morphed images ``x @ T^T`` as float32 (the owner computes in float64)."""
    return torch.from_numpy(matmul64(np.asarray(x, dtype=np.float64), t.T).astype(np.float32))


def augment_first_layer(model: nn.Module, t: np.ndarray) -> nn.Module:
    """A copy of ``model`` whose first ``nn.Linear`` is ``W T^{-1}`` (reads morphed inputs)."""
    model = copy.deepcopy(model)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    w = first.weight.detach().double().numpy()
    w_aug = torch.linalg.solve(torch.from_numpy(t.T.copy()), torch.from_numpy(w.T.copy())).numpy().T
    # = W T^{-1} without forming the inverse
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(w_aug.astype(np.float32)))
    return model


def _to_vectors(x: np.ndarray, block: int | None) -> np.ndarray:
    """Images (N, 784) -> the vectors the secret matrix acts on ((N*patches, p*p) or (N, 784))."""
    if block is None:
        return x
    return x[:, _patch_order(block)].reshape(-1, block * block)


def recover_inverse(x_known: np.ndarray, y_known: np.ndarray) -> np.ndarray:
    """Least-squares estimate ``A`` with ``A y ~ x`` from rows of known pairs (minimum norm)."""
    return _lstsq(x_known, y_known)[0]


def _lstsq(x_known: np.ndarray, y_known: np.ndarray) -> tuple[np.ndarray, int]:
    a_t, rank = lstsq(y_known, x_known)
    return a_t.T, rank


def attack(t: np.ndarray, x_known: np.ndarray, x_test: np.ndarray, block: int | None,
           ks: tuple[int, ...] = (1, 10, 50, 100, 200, 400, 784, 1000, 2000, 5000)) -> dict:
    """Least-squares attack: reconstruction error on unseen images for k known images.

    ``x_known``/``x_test``: float64 flattened plain images; ``t`` the secret operator.
    The attacker knows ``block`` (the scheme is public, the matrix is not).
    """
    x_known = np.asarray(x_known, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y_known, y_test = matmul64(x_known, t.T), matmul64(x_test, t.T)
    n = SIDE * SIDE if block is None else block * block
    m_true = t if block is None else t[np.ix_(_patch_order(block)[:n], _patch_order(block)[:n])]
    per_k, k_exact = [], None
    for k in ks:
        if k > len(x_known):
            continue
        xv, yv = _to_vectors(x_known[:k], block), _to_vectors(y_known[:k], block)
        a, rank = _lstsq(xv, yv)  # rank of the known morphed vectors = rank of the inputs
        rec = matmul64(_to_vectors(y_test, block), a.T)
        ref = _to_vectors(x_test, block)
        err = float(np.linalg.norm(rec - ref) / np.linalg.norm(ref))
        m_hat = recover_inverse(yv, xv)  # the same regression the other way: M y-from-x
        m_err = float(np.linalg.norm(m_hat - m_true) / np.linalg.norm(m_true))
        per_k.append({
            "k": int(k),
            "vector_pairs": int(len(xv)),
            "rank": rank,
            "test_rel_error": err,
            "matrix_rel_error": m_err,
        })
        if k_exact is None and err < EXACT_RTOL:
            k_exact = int(k)
    return {
        "chosen_plaintext": _chosen_plaintext(m_true),
        "dim": n,
        "block": block,
        "per_k": per_k,
        "smallest_k_exact": k_exact,
        "exact_rtol": EXACT_RTOL,
        "note": "k = known images; test_rel_error = ||A y - x|| / ||x|| over unseen test images",
    }


def _chosen_plaintext(m: np.ndarray, seed: int = 0) -> dict:
    """With generic inputs (an attacker who picks them), ``k = n`` pairs recover ``M`` exactly."""
    n = len(m)
    x = np.random.default_rng(seed).standard_normal((n + 8, n))
    y = matmul64(x, m.T)

    def err(k: int) -> float:
        return float(np.linalg.norm(recover_inverse(y[:k], x[:k]) - m) / np.linalg.norm(m))

    return {"k": n, "matrix_rel_error_at_k": err(n), "matrix_rel_error_at_k_minus_1": err(n - 1)}


def _attack_summary(atk: dict) -> str:
    per_k = atk["per_k"]
    picks = [e for e in per_k if e["k"] in (1, 100, atk["dim"])] + per_k[-1:]
    seen, parts = set(), []
    for e in picks:
        if e["k"] not in seen:
            seen.add(e["k"])
            parts.append(f"k={e['k']}: {e['test_rel_error']:.2g}")
    exact = (f"exact (rel. error < {EXACT_RTOL:g}) from k={atk['smallest_k_exact']} known images"
             if atk["smallest_k_exact"] is not None else
             f"not exact up to k={per_k[-1]['k']} (directions the known images never use stay unobserved)")
    cp = atk["chosen_plaintext"]
    return (f"least squares on d={atk['dim']}: {exact}; reconstruction error "
            + ", ".join(parts) + f"; with chosen inputs exact at k={cp['k']}")


def _param_bytes(layer: nn.Linear) -> int:
    return 4 * (layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0))


def run(dataset: str = "mnist", train_limit: int | None = 10000, epochs: int = 3,
        seed: int = 0, json_out=None, test_limit: int | None = None,
        block: int | None = None, key: bytes | str | int | None = None,
        attack_ks: tuple[int, ...] = (1, 10, 50, 100, 200, 400, 784, 1000, 2000, 5000)) -> dict:
    """Plain vs augmented vs unkeyed accuracy, overheads, and the least-squares attack."""
    gen = setup_torch(seed)
    data = load_data(dataset, train_limit, test_limit)
    key = key if key is not None else f"demo-key-{seed}"
    t = morphing_operator(key, block)
    cfg = TrainConfig(epochs=epochs)

    with Stopwatch() as t_morph:
        ym_train = morph(data.x_train, t)
        ym_test = morph(data.x_test, t)

    torch.manual_seed(seed)
    plain = network_a()
    with Stopwatch() as t_plain:
        train(plain, data.x_train, data.y_train, cfg, gen)
    with Stopwatch() as t_aug:
        aug = augment_first_layer(plain, t)
    logits_plain = predict(plain, data.x_test)
    with Stopwatch() as t_inf_plain:
        predict(plain, data.x_test)
    with Stopwatch() as t_inf_aug:
        logits_aug = predict(aug, ym_test)

    torch.manual_seed(seed)
    scratch = network_a()
    with Stopwatch() as t_scratch:
        train(scratch, ym_train, data.y_train, cfg, gen)

    first = plain[0]
    d, h = first.in_features, first.out_features
    n_vec = d if block is None else block * block
    morph_macs = d * n_vec  # per image: (784 / n_vec) blocks of n_vec^2
    net_macs = sum(m.in_features * m.out_features for m in plain.modules() if isinstance(m, nn.Linear))
    data_bytes_u8 = d * len(data.x_train)
    overhead = {
        "owner_morph_macs_per_image": morph_macs,
        "network_forward_macs_per_image": net_macs,
        "owner_compute_overhead_vs_forward": round(morph_macs / net_macs, 4),
        "cloud_compute_overhead": 0.0,  # W' has the shape of W
        "augmented_layer_bytes": _param_bytes(first),
        "augmented_layer_vs_dataset_bytes": round(_param_bytes(first) / (4 * data_bytes_u8), 6),
        "morphed_data_bytes_vs_uint8": 4.0,  # morphed pixels are reals (float32)
        "morph_seconds": round(t_morph.seconds, 4),
        "augment_seconds": round(t_aug.seconds, 4),
        "inference_seconds_plain": round(t_inf_plain.seconds, 4),
        "inference_seconds_augmented": round(t_inf_aug.seconds, 4),
        "note": "MoLe's 9%/5.12% are for VGG-16 on CIFAR, where the augmented layer replaces "
                "a convolution; for a dense first layer the cloud pays nothing extra",
    }

    x_known = data.x_train.numpy().astype(np.float64)
    x_test = data.x_test.numpy().astype(np.float64)[:2000]
    atk = attack(t, x_known, x_test, block, attack_ks)

    pred_plain, pred_aug = logits_plain.argmax(1), logits_aug.argmax(1)
    acc_plain = float((pred_plain == data.y_test).float().mean())
    acc_aug = float((pred_aug == data.y_test).float().mean())
    result = {
        "scheme": SCHEME,
        "dataset": dataset,
        "block": block,
        "train_size": len(data.x_train),
        "test_size": len(data.x_test),
        "epochs": epochs,
        "seed": seed,
        "accuracy": acc_aug,
        "accuracy_plain": acc_plain,
        "accuracy_without_key": accuracy(plain, ym_test, data.y_test),
        "accuracy_trained_on_morphed": accuracy(scratch, ym_test, data.y_test),
        "augmented_max_logit_diff": float((logits_aug - logits_plain).abs().max()),
        "augmented_prediction_agreement": float((pred_plain == pred_aug).float().mean()),
        "train_seconds_plain": round(t_plain.seconds, 3),
        "train_seconds_morphed": round(t_scratch.seconds, 3),
        "time_ratio_vs_plain": round((t_plain.seconds + t_morph.seconds + t_aug.seconds)
                                     / max(t_plain.seconds, 1e-9), 3),
        "overhead": overhead,
        "cloud_sees": "every image multiplied by one fixed secret invertible matrix"
                      + ("" if block is None else f" ({block}x{block} patches)"),
        "attack": atk,
        "attack_summary": _attack_summary(atk),
        "trust": "secret matrix held by the data owner; one cloud",
    }
    write_json(result, json_out)
    return result
