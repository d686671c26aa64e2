"""Processes that die with their launcher: a pipe whose write end only the launcher holds.

The launcher (``launch_local``) makes one pipe per deployment and hands the read end to
each process it starts (``--lifeline FD``); it never writes.  However the launcher ends —
returns, raises, SIGTERM, SIGHUP, kill -9, a crash — the kernel closes its write end, and
every child's read returns end-of-file at once.  The child then stops as on SIGTERM and,
``grace`` seconds later at the most, exits whatever it was doing.  A child of an
*ephemeral* deployment (the temporary folder of ``ss-engine train``: both servers' shares,
every secret key) removes that folder as its last act, so a launcher killed with -9 leaves
nothing behind: each child removes it after its own last write, so the last to finish
removes whatever the others wrote.

Why a pipe and not ``prctl(PR_SET_PDEATHSIG)``: the death signal fires when the *thread*
that started the child ends, not the process, so a deployment launched from a worker thread
would lose its servers when that thread returned; it is Linux-only; and a child killed by
it cannot clean up.  The pipe works on every POSIX system, needs no signal, and the child
decides how to go (stop, remove the secrets, exit).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = ["Lifeline", "watch_lifeline", "remove_tree", "add_lifeline_args", "follow_launcher",
           "exit_now"]


class Lifeline:
    """The launcher's side: the pipe, and the arguments that give a child its read end."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()   # both close-on-exec: only pass_fds crosses

    def child_args(self) -> list[str]:
        return ["--lifeline", str(self.read_fd)]

    def close(self) -> None:
        """The children's lifeline ends here (also at the launcher's exit, however it ends)."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1


def remove_tree(path: Path, attempts: int = 5) -> None:
    """Remove ``path`` and all in it, retrying while another process still writes into it."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.05)


def watch_lifeline(fd: int, stop: Callable[[], None], *, grace: float = 2.0,
                   on_exit: Callable[[], None] = lambda: None) -> threading.Event:
    """In a child: when the launcher is gone (end-of-file on ``fd``), call ``stop`` (the
    graceful stop); if the process is still here ``grace`` seconds later, call ``on_exit``
    and leave with ``os._exit(1)``.  Returns an event set once the launcher is gone, so
    the child's normal way out can tell (and call ``on_exit`` itself)."""
    lost = threading.Event()

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass   # nobody writes; anything read is ignored
        except OSError:
            pass
        lost.set()
        stop()
        time.sleep(grace)
        try:
            on_exit()
        finally:
            os._exit(1)
    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    return lost


def add_lifeline_args(ap) -> None:
    """The two flags a launched process understands (argparse)."""
    ap.add_argument("--lifeline", type=int, default=None, metavar="FD",
                    help="read end of the launcher's lifeline pipe: stop when it closes")
    ap.add_argument("--ephemeral", action="store_true",
                    help="the deployment's folder is temporary: remove it if the launcher dies")


def follow_launcher(fd: int | None, ephemeral: bool, root: Path, stop: Callable[[], None],
                    grace: float = 2.0) -> Callable[[], None]:
    """Watch the lifeline ``fd`` (if any); returns the call for the process's way out, which
    removes the ephemeral deployment's folder ``root`` if the launcher has gone."""
    if fd is None:
        return lambda: None

    def cleanup() -> None:
        if ephemeral:
            remove_tree(root)
    lost = watch_lifeline(fd, stop, grace=grace, on_exit=cleanup)
    return lambda: cleanup() if lost.is_set() else None


def exit_now(code: int) -> None:
    """A launched process's way out once it has closed its sockets and stores: flush the
    logs and leave without the interpreter's teardown, which finalises every module and
    thread of a process that loaded numba, zmq and torch (0.6 s measured, per process, and
    the launcher stops the dealer only after both servers are gone)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
