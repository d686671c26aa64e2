"""Smoke test of the benchmark suite's plumbing (tiny sizes; the numbers are not results).

Checks what the suite's tables rest on: counters per step agree with the per-label and
per-phase splits (the breakdown hooks into ``train_party`` itself), the Beaver bound is
computed right, the simulated network shows up in the step time, and the README table is
rendered from the JSON files.
"""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_breakdown, bench_network, bench_train, readme_table, run_all

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

B = 16  # batch size: small enough for seconds, big enough to exercise every layer


def test_train_section_writes_json(tmp_path):
    out = bench_train.run(quick=True, out_dir=str(tmp_path), configs=(("network-a", B, 32, (32, 32)),),
                          warm_steps=(1, 2))
    on_disk = json.loads((tmp_path / "train.json").read_text())
    assert on_disk["results"][0]["model"] == "network-a"
    r = out["results"][0]
    s = r["secure"]
    for key in ("samples_per_second", "seconds_per_step", "bytes_per_step", "rounds_per_step",
                "peer_wait_fraction", "dealer_wait_fraction", "dealer_bytes_per_step", "by_label_per_step"):
        assert key in s
    assert s["steps"] == 2 and s["step_seconds"]["n"] == 2
    assert len(s["cpu_seconds_per_step"]) == 2 and all(0 < c for c in s["cpu_seconds_per_step"])
    assert s["samples_per_second"] == pytest.approx(B / s["seconds_per_step"])
    # the per-label split adds up to the totals, and both parties send the same amount
    assert sum(v["rounds"] for v in s["by_label_per_step"].values()) == s["rounds_per_step"]
    assert sum(v["bytes"] for v in s["by_label_per_step"].values()) == s["bytes_per_step"]
    assert s["bytes_per_step"] == s["bytes_per_step_party1"] > 0
    assert s["dealer_bytes_per_step"] > 0 and 0 <= s["dealer_wait_fraction"] < 1
    assert set(r["plaintext"]["by_threads"]) == {"1", "2"}
    assert r["slowdown_vs_plaintext"] == pytest.approx(
        r["plaintext"]["samples_per_second"] / s["samples_per_second"])
    assert r["inference"]["secure"]["samples"] == 32 and r["inference"]["secure"]["samples_per_second"] > 0


def test_breakdown_accounts_for_the_whole_step(tmp_path):
    res = bench_breakdown.breakdown("network-a", B, warm=1, steps=1)
    assert res["parties"][0]["rounds_per_step"] == 33   # tests/test_schedule.py: any batch
    for p in res["parties"]:
        tot = p["phases_total"]
        # every byte and round of the step happens inside exactly one phase
        assert tot["bytes_sent"] == p["bytes_sent_per_step"]
        assert tot["rounds"] == p["rounds_per_step"]
        assert 0.5 * p["step_seconds"] <= tot["wall"] <= 1.01 * p["step_seconds"]
        assert sum(v["rounds"] for v in p["by_label"].values()) == p["rounds_per_step"]
    assert res["parties"][0]["dealer_bytes_per_step"] == 0 < res["parties"][1]["dealer_bytes_per_step"]
    # Beaver bound of 784-128-128-10 at batch B: 8 (|X| + |W| + |dY|) per Linear
    want = 8 * ((B * 784 + 128 * 784 + B * 128) + (B * 128 + 128 * 128 + B * 128) + (B * 128 + 10 * 128 + B * 10))
    assert res["matmul_beaver_bound_bytes"] == want
    mm = [r for r in res["products"] if "beaver_bound_bytes" in r]
    assert sorted(r["product"] for r in mm) == ["dW"] * 3 + ["dX"] * 2 + ["fwd"] * 3
    assert all(r["measured_bytes"] >= 0 for r in mm)
    # every matmul operand is a mask the step opened, so the matmul share fits in the openings
    assert res["matmul_measured_bytes"] <= res["mask_open_bytes"] <= res["total_bytes_sent_per_step"]
    labels = [r["phase"] for r in res["parties"][0]["phases"]]
    assert "forward/L0 Linear 784->128" in labels and "backward/L4 Linear 128->10" in labels


def test_network_and_readme_table(tmp_path):
    net = bench_network.run(quick=True, out_dir=str(tmp_path), configs=(("network-a", B),), rtts_ms=(6.0,))
    row = net["results"][0]["rows"][0]
    assert row["latency_term_seconds"] == pytest.approx(row["rounds_per_step"] * 0.003)
    # every round waits at least the one-way delay, so the step cannot be faster than that
    assert row["seconds_per_step"] >= 0.9 * row["latency_term_seconds"]
    assert (tmp_path / "network.png").stat().st_size > 1000
    bench_train.run(quick=True, out_dir=str(tmp_path), configs=(("network-a", B, 32, (32, 32)),),
                    warm_steps=(1, 1))
    table = readme_table.render(readme_table.load_results(str(tmp_path)))
    assert f"network-a training, batch {B}" in table and "RTT 0.1 / 10 / 50 ms" not in table
    assert f"{row['rounds_per_step']:.0f} rounds" in table
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1  # every row has the header's columns
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_table.START}\nold\n{readme_table.END}\nrest\n")
    readme_table.insert(str(readme), table)
    text = readme.read_text()
    assert "old" not in text and table in text and text.endswith("rest\n")


def test_run_all_rejects_unknown_sections():
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--out", "/nonexistent"])
