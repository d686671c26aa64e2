"""Accuracy vs fractional bits (issue 5, suite item 5).

``network-a``, batch 128, one epoch of secure training in the local runtime
(``run_local_training``, the code path of ``ss-engine train``) at f = 12, 16, 20, 24, beside
the plaintext torch twin trained from the same (f-quantised) initial weights on the same
batches.  Full MNIST (60,000 / 10,000) by default; ``--quick`` uses a 2,048-image subset
(accuracy after 16 steps: a plumbing check, not a result).

    python -m benchmarks.bench_fracbits [--quick] [--out benchmarks/out]
"""
from __future__ import annotations

import os

from ss_engine.local_train import run_local_training
from ss_engine.request import TrainRequest

from .common import log, machine_info, write_json, section_main

__all__ = ["accuracy_at", "run", "FRAC_BITS"]

FRAC_BITS = (12, 16, 20, 24)


def accuracy_at(frac_bits: int, train_limit: int | None, test_limit: int | None,
                dataset: str = "mnist", model: str = "network-a", batch_size: int = 128,
                loss_every: int = 10) -> dict:
    r = run_local_training(TrainRequest.build(
        dataset=dataset, model=model, epochs=1, batch_size=batch_size, train_limit=train_limit,
        test_limit=test_limit, compare_plaintext=True, frac_bits=frac_bits, loss_every=loss_every,
        secure_eval=0, progress=False))
    losses = r.get("losses") or []
    return {"frac_bits": frac_bits, "dataset": dataset, "train_samples": r["train_samples"],
            "test_samples": r["test_samples"], "test_accuracy": r["test_accuracy"],
            "plaintext_test_accuracy": r.get("plaintext_test_accuracy"),
            "accuracy_gap": (r.get("plaintext_test_accuracy") or 0.0) - r["test_accuracy"],
            "final_loss": losses[-1][1] if losses else None,
            "catastrophic_steps": r.get("catastrophic_steps"),
            "seconds_per_step": r["seconds_per_step"], "samples_per_second": r["samples_per_second"]}


def plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = out["results"]
    f = [r["frac_bits"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(f, [100 * r["test_accuracy"] for r in rows], "o-", label="secure (ss-engine)")
    ax.plot(f, [100 * (r["plaintext_test_accuracy"] or 0) for r in rows], "s--", label="plaintext torch twin")
    accs = [100 * r["test_accuracy"] for r in rows] + [100 * (r["plaintext_test_accuracy"] or 0) for r in rows]
    ax.set_ylim(max(0.0, min(accs) - 5.0), 100.0)  # differences of a few tenths are noise
    ax.set_xticks(f)
    ax.set_xlabel("fractional bits f")
    ax.set_ylabel("test accuracy after 1 epoch (%)")
    ax.set_title(f"network-a, {rows[0]['train_samples']:,} training images", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, out_dir: str = "benchmarks/out", frac_bits=FRAC_BITS) -> dict:
    train_limit, test_limit = (2048, 2000) if quick else (None, None)
    rows = []
    for f in frac_bits:
        log(f"fracbits: f = {f}, {'2,048' if quick else 'all'} training images, 1 epoch")
        try:
            rows.append(accuracy_at(f, train_limit, test_limit))
        except FileNotFoundError:
            rows.append(accuracy_at(f, train_limit, test_limit, dataset="mnist-small"))
        r = rows[-1]
        log(f"  f = {f}: secure {100 * r['test_accuracy']:.2f}%, plain {100 * r['plaintext_test_accuracy']:.2f}%, "
            f"catastrophic steps {r['catastrophic_steps']}")
    out = {"benchmark": "fracbits", "quick": quick, "machine": machine_info(), "model": "network-a",
           "batch_size": 128, "epochs": 1, "results": rows}
    write_json(os.path.join(out_dir, "fracbits.json"), out)
    plot(out, os.path.join(out_dir, "fracbits.png"))
    return out


def main(argv=None) -> int:
    return section_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
