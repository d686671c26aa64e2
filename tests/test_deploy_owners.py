"""Several data owners feed one job; the trainer is a different party and never sees data."""
from __future__ import annotations

import numpy as np

from client.session import ClientSession
from ss_engine.config import FixedPointConfig
from ss_engine.encoding import decode, encode
from ss_engine.local_train import load_preprocessed
from ss_engine.description import init_params
from ss_engine.owner import encode_images, encode_labels, share_arrays
from ss_engine.prg import PRG
from ss_engine.sharing import share
from ss_engine.job import TrainJob
from ss_engine.twin import evaluate

from .test_deploy_helpers import local_reference, start

N, BS = 192, 32


def test_two_hospitals_and_a_separate_trainer(tmp_path):
    dep = start(tmp_path, clients=("client", "hospital_a", "hospital_b"))
    try:
        fixed = FixedPointConfig(frac_bits=16)
        x, y, xt, yt = load_preprocessed("mnist-small", N, 300)
        halves = {"hospital_a": slice(0, N // 2), "hospital_b": slice(N // 2, N)}
        trainer = ClientSession(dep.config, "client")
        trainer.create("multi", owners=list(halves))   # the trainer names the data owners
        for owner, rows in halves.items():   # each owner shares with its own PRG
            prg = PRG.from_os_random()
            with ClientSession(dep.config, owner) as s:
                s.upload_part("multi", owner, share(encode_images(x[rows], fixed), prg),
                              share(encode_labels(y[rows], fixed), prg))
        prg = PRG.from_os_random()
        p0, p1 = share_arrays({k: encode(v, fixed) for k, v in init_params("network-a", 0).items()}, prg)
        job = TrainJob(batch_size=BS, epochs=1)
        with trainer as s:      # the trainer: parameters only
            s.upload_params("multi", p0, p1)
            assert s.submit("multi", "train", job, 16, parts=["hospital_a", "hospital_b"]) == N // BS
            s.wait("multi", timeout=180)
            r0, r1 = s.fetch("multi")
        got = {k: r0[k] + r1[k] for k in r0}
        ref = local_reference(N, BS)   # the same data in one part, other masks
        for k in ref:
            # only the masks differ, hence the stochastic rounding of every truncation; after
            # 6 momentum steps at lr 0.1 that moves a weight by at most a few hundred ulp
            diff = np.abs(decode(got[k], fixed) - decode(ref[k], fixed))
            assert diff.max() < 5e-3 and diff.mean() < 2e-4, (k, diff.max(), diff.mean())
        acc = {name: evaluate("network-a", {k: decode(v, fixed).astype(np.float32) for k, v in m.items()}, xt, yt)
               for name, m in (("multi", got), ("single", ref))}
        assert acc["multi"] > 0.3 and abs(acc["multi"] - acc["single"]) < 0.05, acc  # chance: 0.1
    finally:
        dep.stop()
        assert not any(h.alive() for h in dep.handles.values())
