"""``python -m servers --rank 0|1 --config FILE``: run one compute party until SIGTERM
(or, started by ``launch_local``, until its launcher is gone)."""
from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from ss_engine.deploy.config import load_config
from ss_engine.deploy.launch import READY_MARK
from ss_engine.deploy.lifeline import add_lifeline_args, exit_now, follow_launcher

from .service import Server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m servers", description=__doc__)
    ap.add_argument("--rank", type=int, choices=(0, 1), required=True)
    ap.add_argument("--config", required=True)
    add_lifeline_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s server{args.rank} %(levelname)s %(message)s")
    cfg = load_config(args.config)
    srv = Server(args.rank, cfg)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: srv.stop.set())
    finish = follow_launcher(args.lifeline, args.ephemeral, Path(cfg.root), srv.stop.set)
    print(f"{READY_MARK} server{args.rank} {cfg.servers[args.rank].client_endpoint}", flush=True)
    try:
        srv.serve()
    finally:
        srv.close()
        print(f"server{args.rank} stopped ({srv.handled} requests, {srv.refused} refused)", flush=True)
        finish()
    return 0


if __name__ == "__main__":
    exit_now(main())
