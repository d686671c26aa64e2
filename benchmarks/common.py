"""Shared plumbing of the benchmark suite: data, runtimes, shared models, a loop over the
engine's one training step for models built by hand, machine facts, JSON output.

Nothing here changes the engine: the suite drives the same public entry points the CLI
uses (``LocalRuntime``, ``train_party``, ``predict_party``) and, for models that are not in
the built-in descriptions, the engine's own step (``ss_engine.training.train_step``) in a
loop (``train_steps``); measurements hook into that step (``ss_engine.nn.StepHooks``).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.encoding import encode
from ss_engine.nn.layers import Linear, ReLU, Sequential
from ss_engine.nn.loss import SoftmaxCrossEntropy
from ss_engine.nn.module import NO_HOOKS, StepHooks
from ss_engine.nn.optim import SGD
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.protocols.rounds import run
from ss_engine.simulate import LocalRuntime
from ss_engine.tensor import SharedTensor
from ss_engine.training import train_step

__all__ = ["machine_info", "load_data", "make_runtime", "shared_params", "shared_data", "mlp_params",
           "build_mlp", "train_steps", "write_json", "read_json", "summary_stats", "Timer", "log",
           "RUNTIME_SEED"]

#: benchmarks use fixed keys so two runs see the same masks (timing does not depend on them)
RUNTIME_SEED = b"ss-engine-benchmarks"


def _git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=os.path.dirname(os.path.abspath(__file__)))
        rev = out.stdout.strip() or None
        return f"{rev}{'+dirty' if dirty.stdout.strip() else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """What the numbers depend on, including the load the machine was under."""
    import numba
    from ss_engine import kernels
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "platform": platform.platform(),
            "loadavg": list(os.getloadavg()), "git": _git_rev(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        rt = kernels.runtime_info()
        info["kernel_runtime"] = {k: getattr(rt, k) for k in getattr(rt, "__dataclass_fields__", {})}
    except Exception as exc:  # noqa: BLE001 - informative only
        info["kernel_runtime"] = repr(exc)
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def load_data(n_train: int, n_test: int = 0, dataset: str = "mnist"):
    """(x_train, y_train, x_test, y_test, dataset used): standardised float32 images (N, 784).

    Falls back to the bundled ``mnist-small`` when the full data set is not installed, and
    repeats the training images when more are asked for than exist (timing only).
    """
    from ss_engine.local_train import load_preprocessed
    try:
        xtr, ytr, xte, yte = load_preprocessed(dataset, n_train, max(1, n_test))
    except (FileNotFoundError, OSError):
        dataset = "mnist-small"
        xtr, ytr, xte, yte = load_preprocessed(dataset, n_train, max(1, n_test))
    if len(xtr) < n_train:
        reps = -(-n_train // len(xtr))
        xtr, ytr = np.tile(xtr, (reps, 1))[:n_train], np.tile(ytr, reps)[:n_train]
    return xtr, ytr, xte[:n_test], yte[:n_test], dataset


def make_runtime(frac_bits: int = 16) -> LocalRuntime:
    return LocalRuntime(EngineConfig(fixed=FixedPointConfig(frac_bits=frac_bits)), seed=RUNTIME_SEED)


def shared_params(rt: LocalRuntime, params: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """The trainer's side: encode float parameters and share them."""
    fixed = rt.config.fixed
    return share_arrays({k: encode(v, fixed) for k, v in params.items()}, rt._input_prg)


def shared_data(rt: LocalRuntime, x: np.ndarray, y: np.ndarray):
    fixed = rt.config.fixed
    return rt.share_ring(encode_images(x, fixed)), rt.share_ring(encode_labels(y, fixed))


def mlp_params(widths: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Torch-default init for an MLP ``widths[0] -> ... -> widths[-1]`` (keys "0.weight", ...)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (fin, fout) in enumerate(zip(widths[:-1], widths[1:])):
        b = 1.0 / np.sqrt(fin)
        out[f"{2 * i}.weight"] = rng.uniform(-b, b, (fout, fin)).astype(np.float32)
        out[f"{2 * i}.bias"] = rng.uniform(-b, b, (fout,)).astype(np.float32)
    return out


def build_mlp(shares: dict[str, np.ndarray], n_linear: int) -> Sequential:
    """Linear-ReLU-...-Linear from ``ss_engine.nn.layers`` directly (network-a is 784-128-128-10)."""
    layers = []
    for i in range(n_linear):
        layers.append(Linear(shares[f"{2 * i}.weight"], shares[f"{2 * i}.bias"], name=str(2 * i)))
        if i + 1 < n_linear:
            layers.append(ReLU())
    return Sequential(*layers)


def train_steps(ctx, model: Sequential, x_share: np.ndarray, y_share: np.ndarray, batch_size: int,
                steps: int, *, lr: float = 0.1, momentum: float = 0.9, input_shape: tuple = (784,),
                on_step: Callable | None = None, hooks: StepHooks = NO_HOOKS) -> Sequential:
    """Run ``steps`` of the engine's training step (``train_step``: forward, softmax
    cross-entropy gradient, backward, SGD) on ``model``, cycling through the data;
    ``on_step(step)`` after each."""
    loss = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr, momentum)
    n = x_share.shape[0]
    for step in range(steps):
        lo = (step * batch_size) % max(1, n - batch_size + 1)
        xb = np.ascontiguousarray(x_share[lo:lo + batch_size].reshape((-1,) + tuple(input_shape)))
        yb = np.ascontiguousarray(y_share[lo:lo + batch_size])
        run(ctx, train_step(model, loss, opt, SharedTensor(ctx, xb), SharedTensor(ctx, yb), lr,
                            hooks=hooks), hooks.step_plan(step), key=("bench", xb.shape[0]))
        if on_step is not None:
            on_step(step)
    return model


def summary_stats(seconds: list[float]) -> dict:
    a = np.asarray(seconds, float)
    if a.size == 0:
        return {"mean": None, "median": None, "p90": None, "min": None, "n": 0}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "min": float(a.min()), "n": int(a.size)}


class Timer:
    """Per-step wall times from a callback run on one party after each step."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self, *_args) -> None:
        self.marks.append(time.perf_counter())

    def deltas(self, start: float) -> list[float]:
        pts = [start] + self.marks
        return [b - a for a, b in zip(pts[:-1], pts[1:])]


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=_jsonable)
        fh.write("\n")


def read_json(path: str):
    with open(path) as fh:
        return json.load(fh)


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def section_main(run: Callable, doc: str, argv=None) -> int:
    """The command line every benchmark section shares: ``--quick`` and ``--out``."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args(argv)
    run(args.quick, args.out)
    return 0
