"""``ss-engine`` command line: train, demo (and the deployment/baseline subcommands)."""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "mnist-small"])
    p.add_argument("--model", default="network-a", choices=["network-a", "lenet"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-step", type=int, default=0, help="decay the lr every N epochs (0: constant)")
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--frac-bits", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="public seed: initial weights and batch order")
    p.add_argument("--loss-every", type=int, default=10,
                   help="reveal the loss to the trainer every N steps (0: never)")
    p.add_argument("--secure-eval", type=int, default=1000,
                   help="test images to classify with secure inference at the end")
    p.add_argument("--compare-plaintext", action="store_true")
    p.add_argument("--json-out", default=None)
    p.add_argument("--plot-out", default=None, help="learning-curve PNG")
    p.add_argument("--local", action="store_true",
                   help="run in the local runtime (party threads + in-process dealer)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ss-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="secure training (two parties + dealer)"))
    demo = sub.add_parser("demo", help="a short secure training run on the shipped MNIST subset")
    demo.add_argument("--json-out", default=None)
    return parser


def _summary(r: dict) -> str:
    lines = [f"secure test accuracy      {100 * r['test_accuracy']:.2f}%  ({r['model']}, {r['dataset']}, "
             f"{r['epochs']} epoch(s), {r['runtime']} runtime)"]
    if "plaintext_test_accuracy" in r:
        lines.append(f"plaintext torch accuracy  {100 * r['plaintext_test_accuracy']:.2f}%")
    lines.append(f"throughput                {r['samples_per_second']:,.0f} samples/s "
                 f"({1000 * r['seconds_per_step']:.1f} ms/step)")
    if r.get("plaintext_samples_per_second"):
        lines.append(f"plaintext throughput      {r['plaintext_samples_per_second']:,.0f} samples/s "
                     f"(secure is {r['slowdown_vs_plaintext']:.0f}x slower)")
    lines.append(f"per step and party        {r['bytes_per_step'] / 1e6:.2f} MB sent, "
                 f"{r['rounds_per_step']:.0f} rounds; dealer {r['dealer_bytes_per_step'] / 1e6:.2f} MB")
    if "secure_inference_accuracy" in r:
        lines.append(f"secure inference          {100 * r['secure_inference_accuracy']:.2f}% on "
                     f"{r['secure_inference_samples']} test images, agreement with plaintext "
                     f"{100 * r['secure_vs_plain_agreement']:.1f}%")
    return "\n".join(lines)


def _train(args) -> int:
    from .local_train import run_local_training
    report = run_local_training(
        dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, lr_step=args.lr_step,
        lr_gamma=args.lr_gamma, train_limit=args.train_limit, test_limit=args.test_limit,
        compare_plaintext=args.compare_plaintext, frac_bits=args.frac_bits, seed=args.seed,
        loss_every=args.loss_every, secure_eval_limit=args.secure_eval,
        progress=not args.no_progress, json_out=args.json_out, plot_out=args.plot_out)
    print(_summary(report))
    return 0


def _demo(args) -> int:
    ns = build_parser().parse_args(["train", "--dataset", "mnist-small", "--epochs", "2",
                                    "--batch-size", "32", "--compare-plaintext"]
                                   + (["--json-out", args.json_out] if args.json_out else []))
    return _train(ns)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "demo":
            return _demo(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ss-engine: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
