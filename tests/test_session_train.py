"""sse.train: a torch model trained securely on arrays ends within 1 point of its torch
twin (same start, batches and schedule), through the request object and runtime the CLI
uses, and comes back as a torch model that takes raw samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ss_engine as sse
from ss_engine.request import RequestError


def blobs(rng, n: int, centers: np.ndarray):
    y = rng.integers(0, len(centers), n)
    x = centers[y] + rng.normal(0, 1.5, (n, centers.shape[1]))
    return (x * 3 + 5).astype(np.float32), y         # raw, unnormalised features


def test_train_matches_its_torch_twin_and_returns_a_torch_model(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.2, (3, 20))
    x, y = blobs(rng, 480, centers)
    xt, yt = blobs(rng, 300, centers)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model, report = sse.train(net, torch.as_tensor(x), torch.as_tensor(y), x_test=xt, y_test=yt,
                              epochs=2, batch_size=32, lr=0.05, compare_plaintext=True,
                              secure_eval=100, json_out=str(tmp_path / "r.json"),
                              runtime_seed=b"train-test-seed!")
    assert report["runtime"] == "local" and report["steps"] == 2 * 15
    assert report["test_accuracy"] > 0.9
    assert abs(report["test_accuracy"] - report["plaintext_test_accuracy"]) <= 0.01
    assert report["secure_vs_plain_agreement"] == 1.0
    # the report is the one the CLI writes
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["test_accuracy"] == report["test_accuracy"] and "params" not in written
    # a torch model on raw samples (the normalisation inside), with the trained weights
    with torch.no_grad():
        acc = (model(torch.as_tensor(xt)).argmax(1).numpy() == yt).mean()
    assert acc == pytest.approx(report["test_accuracy"])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())   # untouched


def test_train_refuses_what_it_cannot_train_in_one_line():
    x, y = np.zeros((10, 4), np.float32), np.zeros(10, np.int64)
    with pytest.raises(RequestError, match="'1' .*Tanh"):
        sse.train(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh()), x, y)
    with pytest.raises(RequestError, match="has 10 samples but 'y' has 9"):
        sse.train(torch.nn.Sequential(torch.nn.Linear(4, 2)), x, y[:9])
    with pytest.raises(RequestError, match="labels must be 0..1"):
        sse.train(torch.nn.Sequential(torch.nn.Linear(4, 2)), x, y + 5)
    with pytest.raises(TypeError, match="unknown request settings"):
        sse.train(torch.nn.Sequential(torch.nn.Linear(4, 2)), x, y, epoch=3)
