"""The lifecycle as a new user meets it: ``ss-engine train`` killed or interrupted mid-run,
and arguments that make no sense.

A killed ``train`` must take the dealer and both servers with it and leave no temporary
folder (it holds both servers' shares and every secret key), whatever the signal; an
interrupted one ends with one line.  Bad arguments are refused before any work starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.cli import main

from .test_deploy_helpers import process_running

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _launched_by(folder: Path) -> list[int]:
    """Pids of the processes whose command line names the deployment config in ``folder``."""
    config = str(folder / "deploy.toml").encode()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if config in Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0"):
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def _wait_for_training(proc: subprocess.Popen, tmp: Path, wait: float = 90.0) -> Path:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for folder in tmp.glob("ss-engine-*"):
            log = folder / "logs" / "server0.log"
            if log.exists() and "job train-" in log.read_text(errors="replace"):
                return folder
        if proc.poll() is not None:
            raise AssertionError(f"train ended early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("training did not start")


@pytest.mark.parametrize("sig, code, last_line", [
    (signal.SIGTERM, 143, "ss-engine: stopped by SIGTERM"),
    (signal.SIGHUP, 129, "ss-engine: stopped by SIGHUP"),      # the terminal was closed
    (signal.SIGINT, 130, "ss-engine: stopped by Ctrl-C"),
    (signal.SIGKILL, -9, None),
])
def test_killed_train_leaves_no_process_and_no_folder(tmp_path, record_property, sig, code, last_line):
    proc = _cli(["train", "--dataset", "mnist-small", "--epochs", "50", "--batch-size", "32",
                 "--secure-eval", "0", "--loss-every", "0", "--no-progress"], tmp_path)
    pids: list[int] = []
    try:
        folder = _wait_for_training(proc, tmp_path)
        pids = _launched_by(folder)
        assert len(pids) == 3, pids   # dealer, server 0, server 1
        os.kill(proc.pid, sig)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and (any(map(process_running, pids)) or folder.exists()):
            time.sleep(0.05)
        record_property("seconds_to_nothing_left", time.monotonic() - t0)
        left = [p for p in pids if process_running(p)]
        assert not left and not folder.exists(), (left, list(folder.rglob("*"))[:10])
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == code, (proc.returncode, err)
        if last_line:
            assert "Traceback" not in err and err.strip().splitlines()[-1] == last_line, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in pids:   # the processes our child started, should anything above have failed
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("args, needle", [
    (["--secure-eval", "-5"], "--secure-eval must be at least 0"),     # it classified 495 images
    (["--train-limit", "0"], "--train-limit must be at least 1"),      # it failed inside numpy
    (["--test-limit", "0"], "--test-limit must be at least 1"),
    (["--frac-bits", "4"], "--frac-bits must be in 12..24"),           # it trained to chance
    (["--frac-bits", "40"], "--frac-bits must be in 12..24"),
    (["--json-out", "/nonexistent-folder/r.json"], "--json-out /nonexistent-folder/r.json: cannot write"),
    (["--json-out", "."], "cannot write there (Is a directory)"),     # it failed after the run
    (["--export", "/nonexistent-folder/m.pt"], "--export /nonexistent-folder/m.pt: cannot write"),
    (["--epochs", "0"], "--epochs must be an integer in [1, 10000], got 0"),
    (["--lr", "-1"], "--lr must be a finite number in (0, 10]"),
    (["--seed", "-3"], "--seed must be an integer in [0, "),
    (["--test-split", "1.5", "--dataset", "x.csv"], "--test-split must be a fraction"),
    (["--local", "--config", "d.toml"], "--config does not apply"),
    (["--keep-job"], "--keep-job needs --config"),
    (["--model", "no-such-net"], "unknown model 'no-such-net'"),
    (["--model", "nets.py:build"], "--model nets.py: no such model file"),
    (["--dataset", "rows.csv"], "--dataset rows.csv: no such file"),
    (["--export", "m.zip"], "export format must be one of"),
    (["--config", "/nonexistent-folder/deploy.toml"], "not found"),
    (["--json-out", "r.json", "--export", "/nonexistent-folder/m.pt"], "--export"),
])
def test_bad_train_arguments_refused_before_any_work(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ss-engine: error: ") and needle in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())   # nothing written: r.json was probed, then removed


def test_bad_predict_arguments_refused(capsys):
    assert main(["predict", "--config", "x.toml", "--job", "j", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    assert main(["predict", "--config", "x.toml", "--job", "j", "--frac-bits", "30"]) == 2
    assert "--frac-bits must be in 12..24" in capsys.readouterr().err
