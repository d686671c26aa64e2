"""Federated averaging with secure aggregation and encrypted inference (federatedencryption-showcase).

Scheme
------
1. N workers hold disjoint parts of the training set: IID (a random equal split) or non-IID
   (McMahan et al. 2017: sort by label, cut into ``2N`` shards, two shards per worker, so
   most workers see two digits).
2. Every round each worker starts from the global model, runs ``local_epochs`` of SGD on its
   data and computes its weighted update ``u_w = (n_w / n) * (theta_w - theta)``.
3. Secure aggregation with the engine: the worker encodes ``u_w`` in fixed point
   (``ss_engine.encoding.encode``) and splits it into two additive shares over Z_2^64
   (``ss_engine.sharing.share`` with its own AES-CTR PRG), one per server. Each server adds
   the shares it receives; neither sees any single worker's update (each share alone is
   uniform). The coordinator reconstructs the two sums, decodes, and applies
   ``theta += sum_w u_w``. The only error is fixed-point rounding, at most
   ``N * 2^-(f+1)`` per coordinate.
4. Encrypted inference with the engine: the final model and the test images are secret-shared
   and both servers run the engine's secure forward pass and argmax
   (``ss_engine.training.predict_party`` on a ``ss_engine.simulate.LocalRuntime``); the owner
   reconstructs only the predicted classes.

Measured: accuracy per round (IID and non-IID), the secure-vs-plain aggregation error, the
agreement of encrypted vs plain predictions, and what one server's shares reveal (correlation
with the worker's update).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from baselines.common import (
    Data,
    Stopwatch,
    TrainConfig,
    load_data,
    network_a,
    predict,
    setup_torch,
    train,
    write_json,
)
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.encoding import decode, encode
from ss_engine.owner import reconstruct_predictions, share_arrays
from ss_engine.prg import PRG
from ss_engine.sharing import reconstruct, share
from ss_engine.simulate import LocalRuntime
from ss_engine.training import predict_party

__all__ = [
    "split_iid",
    "split_non_iid",
    "flatten_params",
    "unflatten_params",
    "SecureAggregator",
    "local_update",
    "federated_training",
    "encrypted_inference",
    "run",
]

SCHEME = "fedavg-secure-aggregation"


# --------------------------------------------------------------------------- splits


def split_iid(n: int, workers: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random partition of ``range(n)`` into ``workers`` near-equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(n), workers)]


def split_non_iid(labels: np.ndarray, workers: int, rng: np.random.Generator,
                  shards_per_worker: int = 2) -> list[np.ndarray]:
    """McMahan's pathological non-IID split: label-sorted shards, ``shards_per_worker`` each."""
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, workers * shards_per_worker)
    pick = rng.permutation(len(shards))
    return [np.sort(np.concatenate([shards[j] for j in pick[w::workers]])) for w in range(workers)]


# --------------------------------------------------------------------------- parameters


def flatten_params(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def unflatten_params(model: nn.Module, flat: np.ndarray) -> None:
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[offset:offset + n].astype(np.float32)).reshape(p.shape))
            offset += n


# --------------------------------------------------------------------------- aggregation


class SecureAggregator:
    """Two servers' accumulators of additive shares; the coordinator opens only the sum.

    ``submit`` plays the worker (encode + share) and both servers (add the share they get);
    ``open_sum`` plays the coordinator. ``view(rank)`` is what one server holds.
    """

    def __init__(self, size: int, fixed: FixedPointConfig):
        self.fixed = fixed
        self._acc = [np.zeros(size, np.int64), np.zeros(size, np.int64)]
        self.received = 0
        self.last_shares: tuple[np.ndarray, np.ndarray] | None = None

    def submit(self, update: np.ndarray, prg: PRG) -> None:
        s0, s1 = share(encode(update, self.fixed), prg)
        self._acc[0] += s0  # server 0 (int64 wraps: arithmetic mod 2^64)
        self._acc[1] += s1  # server 1
        self.received += 1
        self.last_shares = (s0, s1)

    def view(self, rank: int) -> np.ndarray:
        return self._acc[rank].copy()

    def open_sum(self) -> np.ndarray:
        return decode(reconstruct(self._acc[0], self._acc[1]), self.fixed)


def local_update(global_model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator) -> np.ndarray:
    """A worker's local SGD from the global model; returns its new flat parameters."""
    model = network_a()
    model.load_state_dict(global_model.state_dict())
    train(model, x, y, cfg, gen, optimizer="sgd")
    return flatten_params(model)


def federated_training(data: Data, parts: list[np.ndarray], rounds: int, local: TrainConfig,
                       gen: torch.Generator, fixed: FixedPointConfig, secure: bool = True,
                       seed: int = 0) -> tuple[nn.Module, list[dict]]:
    """FedAvg; per round: test accuracy, aggregation error vs plain average, leak check."""
    torch.manual_seed(seed)
    model = network_a()
    n = sum(len(p) for p in parts)
    history = []
    for r in range(rounds):
        theta = flatten_params(model)
        agg = SecureAggregator(len(theta), fixed)
        plain_sum = np.zeros_like(theta)
        corr = []
        with Stopwatch() as t_round:
            for part in parts:
                idx = torch.from_numpy(part)
                theta_w = local_update(model, data.x_train[idx], data.y_train[idx], local, gen)
                u = (len(part) / n) * (theta_w - theta)
                plain_sum += u
                if secure:
                    agg.submit(u, PRG.from_os_random())
                    s0 = agg.last_shares[0].astype(np.float64)
                    corr.append(abs(float(np.corrcoef(s0, u)[0, 1])))
            update = agg.open_sum() if secure else plain_sum
        unflatten_params(model, theta + update)
        acc = float((predict(model, data.x_test).argmax(1) == data.y_test).float().mean())
        history.append({
            "round": r + 1,
            "accuracy": acc,
            "seconds": round(t_round.seconds, 3),
            "aggregation_max_abs_error": float(np.max(np.abs(update - plain_sum))),
            "server0_share_update_abs_corr": max(corr) if corr else None,
        })
    return model, history


# --------------------------------------------------------------------------- inference


def encrypted_inference(model: nn.Module, images: np.ndarray, config: EngineConfig,
                        batch_size: int = 500) -> tuple[np.ndarray, dict]:
    """Predicted classes of ``model`` on ``images`` computed by the engine on shares.

    ``images``: the model's float inputs, (N, 784) in [0, 1] (as the plain model sees them).

    The model parameters and the images are secret-shared to two parties (threads of a
    :class:`ss_engine.simulate.LocalRuntime` with an in-process dealer); the parties run the
    engine's secure forward pass and argmax; only the predictions are reconstructed.
    """
    rt = LocalRuntime(config)
    prg = PRG.from_os_random()
    params = {k: encode(v.detach().double().numpy(), config.fixed) for k, v in model.state_dict().items()}
    p0, p1 = share_arrays(params, prg)
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    x0, x1 = share(encode(x, config.fixed), prg)
    with Stopwatch() as t:
        h0, h1 = rt.run(predict_party, ("network-a", p0, x0), ("network-a", p1, x1),
                        batch_size=batch_size)
    return reconstruct_predictions(h0, h1), {"seconds": round(t.seconds, 3), **rt.stats()}


# --------------------------------------------------------------------------- run


def run(dataset: str = "mnist", train_limit: int | None = 10000, epochs: int = 1,
        seed: int = 0, json_out=None, test_limit: int | None = None, workers: int = 5,
        rounds: int = 5, lr: float = 0.1, batch_size: int = 32, frac_bits: int = 16,
        encrypted_limit: int = 1000, splits: tuple[str, ...] = ("iid", "non-iid")) -> dict:
    """FedAvg with secure aggregation on IID and non-IID splits, then encrypted inference.

    ``epochs`` is the number of local epochs per round; ``encrypted_limit`` test images go
    through encrypted inference (0 skips it).
    """
    gen = setup_torch(seed)
    data = load_data(dataset, train_limit, test_limit)
    fixed = FixedPointConfig(frac_bits=frac_bits)
    local = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr)
    rng = np.random.default_rng(seed)
    split_fns = {
        "iid": lambda: split_iid(len(data.y_train), workers, rng),
        "non-iid": lambda: split_non_iid(data.y_train.numpy(), workers, rng),
    }

    # centralised reference: same total passes over the data, plain SGD
    torch.manual_seed(seed)
    central = network_a()
    with Stopwatch() as t_central:
        train(central, data.x_train, data.y_train,
              TrainConfig(epochs=epochs * rounds, batch_size=batch_size, lr=lr), gen, optimizer="sgd")
    central_acc = float((predict(central, data.x_test).argmax(1) == data.y_test).float().mean())

    per_split, models = {}, {}
    for name in splits:
        parts = split_fns[name]()
        with Stopwatch() as t_fed:
            model, history = federated_training(data, parts, rounds, local, gen, fixed, True, seed)
        models[name] = model
        per_split[name] = {
            "worker_sizes": [len(p) for p in parts],
            "worker_label_counts": [np.bincount(data.y_train.numpy()[p], minlength=10).tolist()
                                    for p in parts],
            "accuracy_per_round": [h["accuracy"] for h in history],
            "final_accuracy": history[-1]["accuracy"],
            "seconds": round(t_fed.seconds, 3),
            "rounds": history,
        }

    # encrypted inference of the final (first split's) model on shared test images
    main = splits[0]
    encrypted = None
    if encrypted_limit:
        x_enc = data.x_test[:encrypted_limit]
        plain_pred = predict(models[main], x_enc).argmax(1).numpy()
        enc_pred, enc_stats = encrypted_inference(models[main], x_enc.numpy(), EngineConfig(fixed=fixed))
        y_enc = data.y_test[:encrypted_limit].numpy()
        encrypted = {
            "model_from_split": main,
            "images": int(len(x_enc)),
            "frac_bits": frac_bits,
            "accuracy_encrypted": float((enc_pred == y_enc).mean()),
            "accuracy_plain_same_images": float((plain_pred == y_enc).mean()),
            "agreement": float((enc_pred == plain_pred).mean()),
            "stats": enc_stats,
        }

    head = per_split[main]
    max_err = max(h["aggregation_max_abs_error"] for s in per_split.values() for h in s["rounds"])
    max_corr = max(h["server0_share_update_abs_corr"] for s in per_split.values() for h in s["rounds"])
    result = {
        "scheme": SCHEME,
        "dataset": dataset,
        "train_size": len(data.x_train),
        "test_size": len(data.x_test),
        "workers": workers,
        "rounds": rounds,
        "local_epochs": epochs,
        "seed": seed,
        "accuracy": head["final_accuracy"],
        "accuracy_plain": central_acc,
        "splits": per_split,
        "secure_aggregation": {
            "frac_bits": frac_bits,
            "max_abs_error_vs_plain_average": max_err,
            "error_bound": workers * 2.0 ** -(frac_bits + 1),
            "max_abs_corr_server0_share_vs_update": max_corr,
        },
        "encrypted_inference": encrypted,
        "train_seconds_central": round(t_central.seconds, 3),
        "time_ratio_vs_plain": round(head["seconds"] / max(t_central.seconds, 1e-9), 3),
        "cloud_sees": "each server: uniformly random shares of every update; the coordinator: "
                      "the averaged model",
        "attack_summary": (
            f"one server's share vs the worker's update: |corr| <= {max_corr:.3f}"
            + ("" if encrypted is None else
               f"; encrypted/plain prediction agreement {encrypted['agreement']:.1%}")),
        "trust": "two non-colluding servers; the coordinator sees only the average",
    }
    write_json(result, json_out)
    return result
