"""``ss-engine`` command line (the data owner's / trainer's console).

train     secure training: by default through a dealer and two servers started locally
          (three processes), with --config through configured servers, with --local in
          the local runtime (party threads + in-process dealer)
demo      train network-a on the MNIST subset shipped with the package, three processes
up        start dealer + server 0 + server 1 locally until Ctrl-C
keygen    make CurveZMQ key pairs
predict   secure inference with a trained model, revealed to this client only
status    a job's status on both servers
jobs      the jobs this client has on the servers (as trainer or named data owner)
delete    delete a job of this client's from both servers
baseline  one plaintext-preprocessing baseline and its attack
compare   the comparison table of every scheme

Every argument is checked before any work starts.  An error ends the command with one
line on stderr and exit code 2 (a bad argument, file or setting) or 1 (a failure on the
way: servers, network, disk; SS_ENGINE_DEBUG=1 shows the traceback of an unexpected one).
Ctrl-C, SIGTERM and SIGHUP stop the servers the command started and remove its temporary
folder, then end it with one line (exit 130, 143, 129); if it is killed outright, those
servers stop and clean up by themselves.
"""
# This lives in client/ because it is the client's tool: ss_engine never imports the trust
# domains or the baselines.
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "request_from_args", "validate", "UsageError", "Stopped",
           "FRAC_BITS_RANGE"]

#: the fractional bits the protocols are tested for (tests/conftest.py FRAC_BITS)
FRAC_BITS_RANGE = (12, 24)
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
#: command-line flag -> the TrainJob field whose rule (ss_engine.job.FIELD_RULES) it obeys
_JOB_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "momentum": "momentum",
              "weight_decay": "weight_decay", "lr_step": "lr_step", "lr_gamma": "lr_gamma",
              "loss_every": "loss_every", "seed": "shuffle_seed"}


class UsageError(ValueError):
    """An argument is out of range, inconsistent with another, or names an unusable path."""


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind, so every ``finally`` runs (the servers
    this command started stop, its temporary folder is removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="network-a", metavar="NAME|PATH.json|PATH.py:FUNCTION",
                   help="a built-in network (network-a, network-b, network-c, network-d, lenet), a "
                        "model description in JSON, or a Python file and the function in it that "
                        "returns a torch nn.Sequential (trained from its own initial weights); "
                        "default network-a")
    p.add_argument("--dataset", default="mnist", metavar="NAME|PATH.npz|PATH.csv",
                   help="mnist, fashion-mnist, mnist-small (shipped), an .npz with arrays x and y, "
                        "or a CSV with a header row and numeric columns; default mnist")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="CSV: the column holding the labels (or regression targets)")
    p.add_argument("--test", default=None, metavar="PATH",
                   help="a separate test file in the training file's format")
    p.add_argument("--test-split", type=float, default=None, metavar="FRACTION",
                   help="without --test, hold out this fraction of the file for testing (default 0.2)")
    p.add_argument("--normalize", default="standard", choices=["standard", "unit", "none"],
                   help="how the data owner scales features before sharing (saved with an exported "
                        "model): standardise, scale to [0, 1], or leave as is; default standard")
    p.add_argument("--task", default="classification", choices=["classification", "regression"],
                   help="classification (integer labels 0..k-1, cross-entropy) or regression "
                        "(float targets, squared error); default classification")
    p.add_argument("--frac-bits", type=int, default=16,
                   help="fractional bits of the fixed-point encoding (12-24); default 16")
    p.add_argument("--seed", type=int, default=0,
                   help="public seed: initial weights, batch order and test split; default 0")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="learning rate; default 0.1")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="SGD with momentum, or Adam (its update computed on shares); default sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum; default 0.9")
    p.add_argument("--beta1", type=float, default=0.9, help="Adam's first-moment decay; default 0.9")
    p.add_argument("--beta2", type=float, default=0.999,
                   help="Adam's second-moment decay; default 0.999")
    p.add_argument("--eps", type=float, default=1e-8,
                   help="Adam's eps; below the square root of the fixed-point floor of the second "
                        "moment it has no effect; default 1e-8")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay; default 0")
    p.add_argument("--lr-step", type=int, default=0, help="decay the learning rate every N epochs "
                                                          "(0: constant)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="decay factor for --lr-step")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test samples")
    p.add_argument("--loss-every", type=int, default=10,
                   help="show the training loss every N steps (only you see it; 0: never)")
    p.add_argument("--secure-eval", type=int, default=1000,
                   help="test samples to classify with secure inference at the end (0: none)")
    p.add_argument("--compare-plaintext", action="store_true",
                   help="also train the same model in plain PyTorch (same start, batches, schedule)")
    p.add_argument("--json-out", default=None, metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot-out", default=None, metavar="FILE.png",
                   help="plot the training loss and test accuracy")
    p.add_argument("--export", default=None, metavar="PATH.pt2|PATH.pt|PATH.onnx",
                   help="write the trained model with its normalisation: .pt2 a torch.export "
                        "program for raw inputs, .pt a state_dict with the normalisation beside "
                        "it, .onnx an ONNX graph (needs the onnx extra)")
    p.add_argument("--local", action="store_true",
                   help="run both parties and the dealer in this process instead of three processes")
    p.add_argument("--config", default=None, help="deployment config naming the servers and dealer")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--keep-job", action="store_true",
                   help="with --config: keep the finished job on the servers (for ss-engine "
                        "predict --job); by default it is deleted once the model is fetched")


def request_from_args(args) -> "TrainRequest":
    """The one request every runtime consumes, from parsed ``train`` (or ``predict``) args."""
    from ss_engine.request import DataRequest, Outputs, Schedule, TrainRequest
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    data = DataRequest(dataset=args.dataset, label_column=args.label_column, test=args.test,
                       test_split=args.test_split, normalize=args.normalize, task=args.task,
                       train_limit=get("train_limit"), test_limit=get("test_limit"))
    schedule = Schedule(epochs=get("epochs", 1), batch_size=get("batch_size", 128),
                        lr=get("lr", 0.1), momentum=get("momentum", 0.9),
                        weight_decay=get("weight_decay", 0.0), lr_step=get("lr_step", 0),
                        lr_gamma=get("lr_gamma", 0.1), loss_every=get("loss_every", 0),
                        optimizer=get("optimizer", "sgd"), beta1=get("beta1", 0.9),
                        beta2=get("beta2", 0.999), eps=get("eps", 1e-8))
    outputs = Outputs(json_out=get("json_out"), plot_out=get("plot_out"), export=get("export"),
                      compare_plaintext=bool(get("compare_plaintext", False)),
                      secure_eval=get("secure_eval", 0), progress=not get("no_progress", True))
    return TrainRequest(model=args.model, data=data, schedule=schedule, outputs=outputs,
                        frac_bits=args.frac_bits, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    from ss_engine import __version__
    parser = argparse.ArgumentParser(prog="ss-engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ss-engine {__version__}")
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
    pr = sub.add_parser("predict", help="secure inference on test samples with a trained job's "
                                        "model (give the training run's model and data options)")
    pr.add_argument("--config", required=True)
    pr.add_argument("--job", required=True, help="the training job whose model to use")
    _add_data_args(pr)
    pr.add_argument("--limit", type=int, default=1000, help="test samples to classify")
    stt = sub.add_parser("status", help="a job's status on both servers")
    stt.add_argument("--config", required=True)
    stt.add_argument("--job", required=True)
    jb = sub.add_parser("jobs", help="this client's jobs on both servers")
    jb.add_argument("--config", required=True)
    jb.add_argument("--client", default="client", help="the client key name to ask as")
    dl = sub.add_parser("delete", help="delete one of this client's jobs from both servers")
    dl.add_argument("--config", required=True)
    dl.add_argument("--job", required=True)
    dl.add_argument("--client", default="client", help="the client key name to ask as")
    bl = sub.add_parser("baseline", help="one plaintext-preprocessing baseline (see ss-engine baseline -h)",
                        add_help=False)
    bl.add_argument("rest", nargs=argparse.REMAINDER)
    cmp_ = sub.add_parser("compare", help="every scheme side by side (Markdown + JSON + PNG)", add_help=False)
    cmp_.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(args: argparse.Namespace) -> None:
    """Check a parsed command line before any work starts (no data read, no process
    started); UsageError naming the flag.  One place for every command: a check applies
    wherever its flag exists, so a new flag joins by adding its check here."""
    def has(name):
        return getattr(args, name, None) is not None
    from ss_engine.job import FIELD_RULES, JobError
    for name, rule in _JOB_FLAGS.items():   # the rules the servers apply at submit
        if has(name):
            try:
                FIELD_RULES[rule].check(_flag(name), getattr(args, name))
            except JobError as exc:
                raise UsageError(str(exc)) from None
    for name, low in (("train_limit", 1), ("test_limit", 1), ("secure_eval", 0), ("limit", 1)):
        if has(name) and getattr(args, name) < low:
            raise UsageError(f"{_flag(name)} must be at least {low}, got {getattr(args, name)}")
    if has("test_split") and not 0 < args.test_split < 1:
        raise UsageError(f"--test-split must be a fraction between 0 and 1, got {args.test_split}")
    if has("frac_bits") and not FRAC_BITS_RANGE[0] <= args.frac_bits <= FRAC_BITS_RANGE[1]:
        raise UsageError(
            f"--frac-bits must be in {FRAC_BITS_RANGE[0]}..{FRAC_BITS_RANGE[1]}, the range the "
            f"protocols are tested for (got {args.frac_bits}): with fewer bits the weight updates "
            f"round away (network-a, 12,800 MNIST images, 1 epoch: 89.5% at 12 bits, 86.5% at 8, "
            f"chance (7%) at 4); with more, products come closer to the ring's 2^62 bound and can wrap")
    if getattr(args, "local", False) and has("config"):
        raise UsageError("--local runs without servers: --config does not apply")
    if getattr(args, "keep_job", False) and not has("config"):
        raise UsageError("--keep-job needs --config: servers started for one run stop after it")
    if has("dataset"):
        _check_dataset(args.dataset)
    if has("test") and not Path(args.test).is_file():
        raise UsageError(f"--test {args.test}: no such file")
    if has("model"):
        _check_model(args.model)
    if has("config") and args.command != "up":
        from ss_engine.deploy.config import ConfigError, load_config
        try:
            load_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    if has("export"):
        from ss_engine.export import ExportError, check_export_path
        try:
            check_export_path(args.export)
        except ExportError as exc:
            raise UsageError(str(exc)) from None
    for name in ("json_out", "plot_out", "export"):
        if has(name):
            _check_writable(getattr(args, name), _flag(name))


def _check_dataset(ref: str) -> None:
    from ss_engine.datasets import DATASETS, check_available
    try:
        check_available(ref)   # a built-in set: its files are there
        return
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except ValueError:
        pass   # not a built-in name: a file
    if not Path(ref).is_file():
        raise UsageError(f"--dataset {ref}: no such file (and not a built-in data set: "
                         f"{', '.join(DATASETS)})")


def _check_model(ref: str) -> None:
    from ss_engine.description import DescriptionError, zoo_model
    path = ref.split(":", 1)[0] if ":" in ref and ref.split(":", 1)[0].endswith(".py") else ref
    if path.endswith((".py", ".json")):
        if not Path(path).is_file():
            raise UsageError(f"--model {path}: no such model file")
        return
    try:
        zoo_model(ref)
    except DescriptionError as exc:
        raise UsageError(f"--model: {exc}") from None


def _check_writable(path: str, flag: str) -> None:
    """Open ``path`` for appending (creating it if need be, then removing what we made), so
    an output that cannot be written fails now and not after the whole run."""
    p = Path(path)
    existed = os.path.lexists(p)
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        p.unlink()


def _train(args) -> int:
    request = request_from_args(args)
    if args.local:
        from ss_engine.local_train import run_local_training
        report = run_local_training(request)
    elif args.config:
        from .train import train_remote
        report = train_remote(args.config, request, keep_job=args.keep_job)
    else:
        from .train import train_with_local_servers
        report = train_with_local_servers(request)
    from ss_engine.report import format_summary
    print(format_summary(report))
    return 0


def _demo(args) -> int:
    ns = build_parser().parse_args(["train", "--dataset", "mnist-small", "--epochs", "3",
                                    "--batch-size", "32", "--lr", "0.03", "--compare-plaintext",
                                    "--secure-eval", "500"]
                                   + (["--json-out", args.json_out] if args.json_out else [])
                                   + (["--local"] if args.local else []))
    validate(ns)
    return _train(ns)


def _run(args) -> int:
    validate(args)
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
        out = predict_dataset(args.config, args.job, request_from_args(args), limit=args.limit)
        print(json.dumps({k: v for k, v in out.items() if k != "predictions"}, indent=2, default=str))
        return 0
    if args.command == "status":
        from .train import format_status, job_status
        print(format_status(job_status(args.config, args.job)))
        return 0
    if args.command == "jobs":
        from .train import format_jobs, list_jobs
        print(format_jobs(list_jobs(args.config, client=args.client)))
        return 0
    if args.command == "delete":
        from .train import delete_job
        delete_job(args.config, args.job, client=args.client)
        print(f"deleted job {args.job} from both servers")
        return 0
    return 1


def _on_signal(signum, frame) -> None:
    # further signals while the command unwinds are ignored: its clean-up must finish
    for sig in _SIGNAL_NAMES:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
    return text[:1000]


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
    handlers = {sig: signal.signal(sig, _on_signal) for sig in _SIGNAL_NAMES}
    try:
        return _run(args)
    except KeyboardInterrupt as exc:   # Ctrl-C (also when it comes before our handler is in)
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"ss-engine: stopped by {_SIGNAL_NAMES[signum]}", file=sys.stderr)
        return 128 + signum
    except ValueError as exc:   # UsageError, and what is wrong in a file or setting named
        print(f"ss-engine: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - every error is one line; SS_ENGINE_DEBUG shows more
        if os.environ.get("SS_ENGINE_DEBUG"):
            raise
        known = isinstance(exc, (OSError, RuntimeError))   # incl. RpcError, JobFailed, timeouts
        what = "error" if known else f"internal error: {type(exc).__name__}"
        print(f"ss-engine: {what}: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
