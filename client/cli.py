"""``ss-engine`` command line (the data owner's / trainer's console).

train     secure training: by default through a dealer and two servers started locally
          (three processes), with --config through configured servers, with --local in
          the local runtime (party threads + in-process dealer)
demo      train network-a on the MNIST subset shipped with the package, three processes
up        start dealer + server 0 + server 1 locally until Ctrl-C
keygen    make CurveZMQ key pairs
predict   secure inference with a trained model, revealed to this client only
status    a job's status on both servers
baseline  one plaintext-preprocessing baseline and its attack
compare   the comparison table of every scheme

It lives in ``client/`` because it is the client's tool: ``ss_engine`` never imports the
trust domains or the baselines.
"""
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
    p.add_argument("--config", default=None, help="deployment config naming the servers and dealer")
    p.add_argument("--export", default=None, help="write the trained model as a torch state_dict")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ss-engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="secure training (two parties + dealer)"))
    demo = sub.add_parser("demo", help="a short secure training run on the shipped MNIST subset")
    demo.add_argument("--json-out", default=None)
    demo.add_argument("--local", action="store_true", help="use the local runtime instead of processes")
    up = sub.add_parser("up", help="start dealer + server 0 + server 1 locally (Ctrl-C stops them)")
    up.add_argument("--config", default=None)
    up.add_argument("--root", default="ss-engine-local", help="folder for keys, config, data, logs")
    kg = sub.add_parser("keygen", help="make CurveZMQ key pairs")
    kg.add_argument("--dir", required=True)
    kg.add_argument("names", nargs="+")
    kg.add_argument("--force", action="store_true")
    pr = sub.add_parser("predict", help="secure inference on test images with a trained job's model")
    pr.add_argument("--config", required=True)
    pr.add_argument("--job", required=True)
    pr.add_argument("--dataset", default="mnist")
    pr.add_argument("--model", default="network-a")
    pr.add_argument("--limit", type=int, default=1000)
    pr.add_argument("--frac-bits", type=int, default=16)
    stt = sub.add_parser("status", help="a job's status on both servers")
    stt.add_argument("--config", required=True)
    stt.add_argument("--job", required=True)
    bl = sub.add_parser("baseline", help="one plaintext-preprocessing baseline (see ss-engine baseline -h)",
                        add_help=False)
    bl.add_argument("rest", nargs=argparse.REMAINDER)
    cmp_ = sub.add_parser("compare", help="every scheme side by side (Markdown + JSON + PNG)", add_help=False)
    cmp_.add_argument("rest", nargs=argparse.REMAINDER)
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
    kw = dict(dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
              lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, lr_step=args.lr_step,
              lr_gamma=args.lr_gamma, train_limit=args.train_limit, test_limit=args.test_limit,
              compare_plaintext=args.compare_plaintext, frac_bits=args.frac_bits, seed=args.seed,
              loss_every=args.loss_every, secure_eval_limit=args.secure_eval,
              progress=not args.no_progress, json_out=args.json_out)
    if args.local:
        if args.config or args.export:
            raise ValueError("--local runs without servers: --config and --export do not apply")
        from ss_engine.local_train import run_local_training
        report = run_local_training(**kw, plot_out=args.plot_out)
    elif args.plot_out:
        raise ValueError("--plot-out needs per-epoch accuracies: use it with --local")
    elif args.config:
        from .train import train_remote
        report = train_remote(args.config, **kw, export_path=args.export)
    else:
        from .train import train_with_local_servers
        report = train_with_local_servers(**kw, export_path=args.export)
    print(_summary(report))
    return 0


def _demo(args) -> int:
    ns = build_parser().parse_args(["train", "--dataset", "mnist-small", "--epochs", "3",
                                    "--batch-size", "32", "--lr", "0.03", "--compare-plaintext",
                                    "--secure-eval", "500"]
                                   + (["--json-out", args.json_out] if args.json_out else [])
                                   + (["--local"] if args.local else []))
    return _train(ns)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the baseline tools keep their own parsers; hand them the rest of the line untouched
    if argv and argv[0] == "baseline":
        from baselines.cli import main as baseline_main
        return baseline_main(argv[1:])
    if argv and argv[0] == "compare":
        from baselines.compare import main as compare_main
        return int(compare_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "up":
            from ss_engine.deploy.launch import run_up
            return run_up(config=args.config, root=args.root)
        if args.command == "keygen":
            from ss_engine.net.keys import keygen
            for name, (pub, sec) in keygen(args.dir, args.names, force=args.force).items():
                print(f"{name}: public {pub}  secret {sec}")
            return 0
        if args.command == "predict":
            from .train import predict_dataset
            out = predict_dataset(args.config, args.job, dataset=args.dataset, limit=args.limit,
                                  model=args.model, frac_bits=args.frac_bits)
            print(json.dumps({k: v for k, v in out.items() if k != "predictions"}, indent=2, default=str))
            return 0
        if args.command == "status":
            from .train import format_status, job_status
            print(format_status(job_status(args.config, args.job)))
            return 0
    except (ValueError, FileNotFoundError, TimeoutError, ConnectionError) as exc:
        print(f"ss-engine: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
