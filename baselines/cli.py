"""``ss-engine baseline NAME [--dataset D] [--json-out FILE] ...`` (also ``python -m baselines``)."""

from __future__ import annotations

import argparse
import ast
import json
import sys

from baselines import BASELINES, run_baseline

__all__ = ["build_parser", "main"]


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.replace("-", "_"), parsed


def build_parser(prog: str = "ss-engine baseline") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run one plaintext-preprocessing baseline "
                                "and its attack; print a summary and optionally write JSON.")
    p.add_argument("name", choices=sorted(BASELINES))
    p.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | mnist-small")
    p.add_argument("--train-limit", type=int, default=None, help="first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="first N test images")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None)
    p.add_argument("--png-out", default=None, help="gan-remap: sample grid")
    p.add_argument("--set", dest="options", action="append", type=_option, default=[],
                   metavar="KEY=VALUE", help="scheme option, e.g. block=7, rounds=10, "
                   "engine_train=True (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {"dataset": args.dataset, "seed": args.seed, "json_out": args.json_out,
              "test_limit": args.test_limit}
    if args.train_limit is not None:
        kwargs["train_limit"] = args.train_limit
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    if args.png_out is not None:
        if args.name != "gan-remap":
            print("--png-out applies to gan-remap only", file=sys.stderr)
            return 2
        kwargs["png_out"] = args.png_out
    kwargs.update(dict(args.options))
    result = run_baseline(args.name, **kwargs)
    summary = {k: result.get(k) for k in ("scheme", "dataset", "accuracy", "accuracy_plain",
                                         "time_ratio_vs_plain", "attack_summary")}
    print(json.dumps(summary, indent=2))
    return 0
