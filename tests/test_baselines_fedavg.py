"""FedAvg with the engine's secure aggregation and encrypted inference; the engine's own row
(attacks on one server's shares); the comparison table."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from baselines import fedavg, secret_sharing
from baselines.common import network_a
from baselines import compare as compare_baselines
from ss_engine.config import EngineConfig, FixedPointConfig
from ss_engine.prg import PRG

SMALL = "mnist-small"


def test_splits_partition_the_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    for parts in (fedavg.split_iid(len(labels), 5, rng), fedavg.split_non_iid(labels, 5, rng)):
        allidx = np.concatenate(parts)
        assert len(parts) == 5 and np.array_equal(np.sort(allidx), np.arange(len(labels)))
    non_iid = fedavg.split_non_iid(labels, 5, rng)
    assert all(len(np.unique(labels[p])) == 2 for p in non_iid)


@given(st.integers(1, 6), st.sampled_from([12, 16, 20]), st.integers(0, 2**32 - 1))
def test_secure_aggregation_equals_plain_sum(workers, frac_bits, seed):
    rng = np.random.default_rng(seed)
    updates = rng.normal(scale=0.5, size=(workers, 300))
    agg = fedavg.SecureAggregator(300, FixedPointConfig(frac_bits=frac_bits))
    for u in updates:
        agg.submit(u, PRG.from_os_random())
    np.testing.assert_allclose(agg.open_sum(), updates.sum(0), rtol=0,
                               atol=workers * 2.0 ** -(frac_bits + 1) + 1e-12)


def test_one_server_view_is_independent_of_the_update():
    u = np.linspace(-1, 1, 5000)
    agg = fedavg.SecureAggregator(len(u), FixedPointConfig())
    agg.submit(u, PRG.from_os_random())
    view = agg.view(0).astype(np.float64)
    assert abs(np.corrcoef(view, u)[0, 1]) < 0.06
    assert abs(np.corrcoef(agg.view(1).astype(np.float64), u)[0, 1]) < 0.06


def test_encrypted_inference_agrees_with_plain():
    torch.manual_seed(0)
    model = network_a()
    x = torch.rand(40, 784)
    pred, stats = fedavg.encrypted_inference(model, x.numpy(), EngineConfig())
    plain = model(x).argmax(1).numpy()
    assert (pred == plain).mean() >= 0.95
    assert stats["party0"]["channel"]["bytes_sent"] > 0


@pytest.fixture(scope="module")
def fed_result():
    return fedavg.run(dataset=SMALL, train_limit=None, epochs=2, seed=0, workers=4, rounds=4,
                      encrypted_limit=200)


def test_fedavg_learns_and_aggregates_exactly(fed_result):
    r = fed_result
    iid, non = r["splits"]["iid"], r["splits"]["non-iid"]
    assert iid["final_accuracy"] > 0.7
    assert iid["accuracy_per_round"][-1] > iid["accuracy_per_round"][0]
    assert non["final_accuracy"] > 0.2
    agg = r["secure_aggregation"]
    assert agg["max_abs_error_vs_plain_average"] <= agg["error_bound"] + 1e-9
    assert agg["max_abs_corr_server0_share_vs_update"] < 0.1


def test_fedavg_encrypted_inference_matches_plain(fed_result):
    enc = fed_result["encrypted_inference"]
    assert enc["images"] == 200
    assert enc["agreement"] >= 0.98
    assert abs(enc["accuracy_encrypted"] - enc["accuracy_plain_same_images"]) <= 0.02


def test_independence_test_detects_a_leak():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 2, size=(200, 784)).astype(np.uint8) * 200
    leaky = np.where(pixels > 0, rng.integers(2**62, 2**63 - 1, size=pixels.shape),
                     rng.integers(-2**63, 0, size=pixels.shape))
    assert secret_sharing.independence_test(pixels, leaky)["p_value"] < 1e-6
    fair = secret_sharing.server_view(pixels, FixedPointConfig(), PRG.from_os_random())
    assert secret_sharing.independence_test(pixels, fair)["p_value"] > 1e-4


@pytest.fixture(scope="module")
def ss_result():
    return secret_sharing.run(dataset=SMALL, train_limit=None, test_limit=None, epochs=2,
                              known_pairs=1000, engine_train=True, engine_train_limit=1000,
                              engine_epochs=2, engine_batch_size=50)


def test_attacks_on_one_servers_shares_are_at_chance(ss_result):
    atk = ss_result["attack"]
    assert atk["shuffle_pixels_matched"] == 0
    assert atk["morphing_lstsq_test_rel_error"] >= 0.95 * atk["mean_image_rel_error"]
    assert atk["learned_classifier_accuracy"] < 0.2
    assert atk["plain_classifier_on_share_accuracy"] < 0.25
    assert atk["independence"]["p_value"] > 1e-4


def test_engine_training_close_to_its_twin(ss_result):
    eng = ss_result["engine_training"]
    assert eng["accuracy_twin"] > 0.6
    assert eng["accuracy_secure"] > 0.6
    assert abs(eng["accuracy_secure"] - eng["accuracy_twin"]) <= 0.05


def test_comparison_table_and_chart(tmp_path, fed_result, ss_result):
    fake = {
        "scheme": "key-pixel-shuffling", "accuracy": 0.9, "accuracy_plain": 0.91,
        "time_ratio_vs_plain": 1.0, "cloud_sees": "shuffled | images", "trust": "key",
        "attack_summary": "k=1", "attack": {"per_k": [{"k": 1, "test_images_restored": 0.0},
                                                      {"k": 1000, "test_images_restored": 0.97}]},
    }
    results = {"shuffle": fake, "fedavg": fed_result, "secret-sharing": ss_result}
    rows = compare_baselines.rows_from_results(results)
    assert [r["key"] for r in rows] == ["shuffle", "fedavg", "secret-sharing"]
    assert rows[0]["attack_success"] == pytest.approx(0.97)
    assert rows[2]["attack_success"] < 0.2
    md = compare_baselines.render_markdown(rows, {"dataset": SMALL})
    header = md.splitlines()[0]
    for col in ("accuracy", "time vs plaintext training", "what the cloud sees",
                "attack result", "key or trust assumption"):
        assert col in header
    assert all(line.count("|") == 10 for line in md.splitlines()[:5])  # '|' in cells escaped
    png = tmp_path / "cmp.png"
    compare_baselines.plot(rows, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    json.dumps(rows)  # serialisable
