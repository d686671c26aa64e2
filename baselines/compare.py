"""One comparison of the engine and the plaintext-preprocessing baselines (issue 6).

    python -m baselines.compare --json-out F.json --md-out F.md --png-out F.png

Runs every scheme in ``baselines`` on the same data and network (network-a, MNIST by
default) and writes one Markdown table, the full JSON of every run, and a PNG with two bar
charts: test accuracy (scheme vs plaintext) and attack success (0 = chance, 1 = the secret
recovered). A full run takes about 3 minutes on 2 cores; ``--quick`` uses small subsets
(under a minute).

Attack success, per scheme (documented in the table's footnote):
* shuffling: fraction of unseen shuffled images restored exactly from ``K`` known pairs;
* morphing: 1 - relative reconstruction error of unseen images from ``K`` known pairs;
* GAN remapping: advantage of a plain classifier guessing the hidden class, ``2 (acc - 1/2)``;
* federated averaging: |correlation| between one server's share and a worker's update;
* secret sharing: the best of the same attacks on one server's shares, chance-corrected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from baselines import run_baseline

__all__ = ["run_all", "rows_from_results", "attack_success", "render_markdown", "plot", "main"]

ATTACK_K = 1000


def _k_entry(per_k: list[dict], k: int) -> dict | None:
    """The entry for the largest k <= ``k`` in an attack's ``per_k`` list."""
    best = None
    for entry in per_k:
        if entry["k"] <= k:
            best = entry
    return best


def attack_success(result: dict, k: int = ATTACK_K) -> float | None:
    scheme = result["scheme"]
    atk = result.get("attack") or {}
    if scheme == "key-pixel-shuffling":
        e = _k_entry(atk["per_k"], k)
        return e["test_images_restored"] if e else None
    if scheme == "matrix-morphing":
        e = _k_entry(atk["per_k"], k)
        return max(0.0, 1.0 - e["test_rel_error"]) if e else None
    if scheme == "gan-class-remapping":
        return abs(2.0 * (atk["secret_pair_accuracy"] - 0.5))  # below chance leaks too
    if scheme == "fedavg-secure-aggregation":
        return result["secure_aggregation"]["max_abs_corr_server0_share_vs_update"]
    if scheme.startswith("secret-sharing"):
        clf = max(0.0, (atk["learned_classifier_accuracy"] - atk["majority_class_accuracy"])
                  / (1 - atk["majority_class_accuracy"]))
        rec = max(0.0, 1.0 - atk["morphing_lstsq_test_rel_error"] / atk["mean_image_rel_error"])
        return max(clf, rec, atk["shuffle_pixels_matched"] / 784)
    return None


def run_all(dataset: str = "mnist", quick: bool = False, seed: int = 0,
            gan_png: str | None = None, engine_json: str | None = None,
            engine_train: bool = True) -> dict:
    """Run every scheme; returns ``{name: result}`` (plus ``_meta``)."""
    if quick:
        n, nt, ep = 3000, 2000, 2
        sizes = {"pool": 2000, "ks": (1, 2, 5, 10, 50, 100, 1000), "gan": 8, "vae": 10,
                 "rounds": 5, "enc": 300, "eng_n": 2000, "eng_ep": 1, "eng_bs": 50,
                 "known": 1000}
    else:
        n, nt, ep = 10000, None, 3
        sizes = {"pool": 5000, "ks": (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
                 "gan": 10, "vae": 15, "rounds": 10, "enc": 2000, "eng_n": 10000, "eng_ep": 3,
                 "eng_bs": 128, "known": 5000}
    common = {"dataset": dataset, "seed": seed, "test_limit": nt, "train_limit": n}
    results, timings = {}, {}

    def go(name: str, key: str, **kw) -> None:
        t0 = time.perf_counter()
        print(f"[compare] {key} ...", file=sys.stderr, flush=True)
        results[key] = run_baseline(name, **{**common, **kw})
        timings[key] = round(time.perf_counter() - t0, 2)

    go("shuffle", "shuffle", epochs=ep, models=("network-a", "cnn"), attack_pool=sizes["pool"],
       attack_ks=sizes["ks"])
    go("morphing", "morphing", epochs=ep, attack_ks=tuple(sorted(set(sizes["ks"]) | {784})))
    go("morphing", "morphing-7x7", epochs=ep, block=7, attack_ks=(1, 2, 5, 10, 50))
    go("gan-remap", "gan-remap", epochs=ep, gan_epochs=sizes["gan"], vae_epochs=sizes["vae"],
       png_out=gan_png, train_limit=max(n, 20000) if not quick else 8000)
    go("fedavg", "fedavg", epochs=1, rounds=sizes["rounds"], encrypted_limit=sizes["enc"])
    go("secret-sharing", "secret-sharing", epochs=ep, known_pairs=sizes["known"],
       engine_train=engine_train and engine_json is None, engine_train_limit=sizes["eng_n"],
       engine_epochs=sizes["eng_ep"], engine_batch_size=sizes["eng_bs"])
    if engine_json is not None:
        _merge_engine(results["secret-sharing"], json.loads(Path(engine_json).read_text()))
    results["_meta"] = {"dataset": dataset, "quick": quick, "seed": seed, "wall_seconds": timings,
                        "attack_k": ATTACK_K}
    return results


def _merge_engine(row: dict, engine: dict) -> None:
    """Take accuracy/time from an engine benchmark JSON (keys: accuracy[, accuracy_plain,
    time_ratio_vs_plain])."""
    for key in ("accuracy", "accuracy_plain", "time_ratio_vs_plain"):
        if key in engine:
            row[key] = engine[key]
    row["engine_training"] = {"from_file": True, **engine}


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def rows_from_results(results: dict) -> list[dict]:
    names = {
        "shuffle": "Key pixel shuffling (PrivDL)",
        "morphing": "Matrix morphing + augmented layer (MoLe)",
        "morphing-7x7": "Matrix morphing, 7x7 blocks (MoLe)",
        "gan-remap": "GAN class remapping (Data-Semantics-Protector)",
        "fedavg": "FedAvg + secure aggregation",
        "secret-sharing": "Secret sharing (ss-engine)",
    }
    rows = []
    for key, label in names.items():
        r = results.get(key)
        if r is None:
            continue
        rows.append(_row(key, label, r))
        cnn = (r.get("models") or {}).get("cnn") if key == "shuffle" else None
        if cnn is not None:  # PrivDL's claim is about convolutional networks
            rows.append(_row("shuffle-cnn", "Key pixel shuffling, small CNN (PrivDL)", {
                **r, "accuracy": cnn["with_key"], "accuracy_plain": cnn["plain"],
                "accuracy_without_key": cnn["without_key"],
                "time_ratio_vs_plain": round(cnn["train_seconds_shuffled"]
                                             / max(cnn["train_seconds_plain"], 1e-9), 3)}))
    return rows


def _row(key: str, label: str, r: dict) -> dict:
    return {
        "key": key,
        "scheme": label,
        "accuracy": r.get("accuracy"),
        "accuracy_plain": r.get("accuracy_plain"),
        "accuracy_without_key": r.get("accuracy_without_key"),
        "time_ratio_vs_plain": r.get("time_ratio_vs_plain"),
        "cloud_sees": r.get("cloud_sees", ""),
        "attack": r.get("attack_summary", ""),
        "attack_success": attack_success(r),
        "trust": r.get("trust", ""),
    }


def render_markdown(rows: list[dict], meta: dict | None = None) -> str:
    head = ("| scheme | accuracy | plaintext accuracy | accuracy without key | "
            "time vs plaintext training | what the cloud sees | attack result | attack success | "
            "key or trust assumption |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ratio = "n/a" if r["time_ratio_vs_plain"] is None else f"{r['time_ratio_vs_plain']:.2f}x"
        cells = [r["scheme"], _fmt(r["accuracy"]), _fmt(r["accuracy_plain"]),
                 _fmt(r.get("accuracy_without_key")), ratio,
                 r["cloud_sees"], r["attack"], _fmt(r["attack_success"], pct=False), r["trust"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    notes = [
        "",
        f"Attack success: 0 = chance, 1 = secret recovered. Shuffling: unseen images restored "
        f"exactly from {ATTACK_K} known pairs; morphing: 1 - reconstruction error from "
        f"{ATTACK_K} known pairs; GAN: |2 x (hidden-class guess accuracy - 1/2)|; FedAvg: "
        "|corr| of one server's share with a worker's update; secret sharing: the best of the "
        "same attacks on one server's share, chance-corrected.",
        "Time vs plaintext: the scheme's training (including the owner's transform or generator) "
        "divided by plaintext training of the same network on the same machine; wall-clock on a "
        "shared 2-core CPU, so expect noise. FedAvg compares with centralised SGD for the same "
        "number of passes; the engine row divides secure training by its float twin.",
    ]
    if meta:
        notes.append(f"Dataset: {meta.get('dataset')}, quick={meta.get('quick')}, seed={meta.get('seed')}.")
    return "\n".join(lines + notes) + "\n"


def plot(rows: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["scheme"].split(" (")[0].replace(" + ", "\n+ ") for r in rows]
    x = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    acc = [r["accuracy"] or 0 for r in rows]
    plain = [r["accuracy_plain"] or 0 for r in rows]
    ax1.bar(x - 0.2, acc, 0.4, label="scheme")
    ax1.bar(x + 0.2, plain, 0.4, label="plaintext")
    ax1.set_ylim(0, 1.2)
    ax1.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax1.set_title("test accuracy")
    ax1.legend(loc="upper center", ncol=2, fontsize=8)
    succ = [r["attack_success"] or 0 for r in rows]
    ax2.bar(x, succ, 0.5, color="tab:red")
    ax2.set_ylim(0, 1.05)
    ax2.set_title(f"attack success (0 = chance, 1 = recovered; k = {ATTACK_K})")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ss-engine compare", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--quick", action="store_true", help="small subsets (under a minute)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default="benchmarks/out/compare_baselines.json")
    p.add_argument("--md-out", default="benchmarks/out/compare_baselines.md")
    p.add_argument("--png-out", default="benchmarks/out/compare_baselines.png")
    p.add_argument("--gan-png", default=None, help="GAN sample grid (default: next to --png-out)")
    p.add_argument("--engine-json", default=None,
                   help="take the engine row's accuracy/time from this JSON instead of training")
    p.add_argument("--no-engine-train", action="store_true",
                   help="skip the engine's secure training (its row shows n/a)")
    args = p.parse_args(argv)
    gan_png = args.gan_png or str(Path(args.png_out).with_name(Path(args.png_out).stem + "_gan_samples.png"))
    results = run_all(args.dataset, args.quick, args.seed, gan_png, args.engine_json,
                      not args.no_engine_train)
    rows = rows_from_results(results)
    md = render_markdown(rows, results["_meta"])
    for out in (args.json_out, args.md_out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps({"rows": rows, "results": results}, indent=2) + "\n")
    Path(args.md_out).write_text(md)
    plot(rows, args.png_out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
