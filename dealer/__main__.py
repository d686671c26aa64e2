"""``python -m dealer --config FILE``: run the crypto provider until SIGTERM/SIGINT (or,
started by ``launch_local``, until its launcher is gone)."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from ss_engine.deploy.config import load_config
from ss_engine.deploy.launch import READY_MARK
from ss_engine.deploy.lifeline import add_lifeline_args, exit_now, follow_launcher

from .service import DealerService


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dealer", description=__doc__)
    ap.add_argument("--config", required=True)
    add_lifeline_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dealer %(levelname)s %(message)s")
    cfg = load_config(args.config)
    svc = DealerService(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    finish = follow_launcher(args.lifeline, args.ephemeral, Path(cfg.root), stop.set)
    print(f"{READY_MARK} dealer {cfg.dealer.endpoint}", flush=True)
    try:
        svc.serve(stop)
    finally:
        svc.close()
        print(f"dealer stopped ({svc.handled} requests, {svc.errors} refused)", flush=True)
        finish()
    return 0


if __name__ == "__main__":
    exit_now(main())
