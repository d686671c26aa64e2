"""Key pixel shuffling and matrix morphing: exact algebra, the papers' claims, the attacks.

Runs on the shipped MNIST subset (2,000 train / 500 test), so no shared data is needed.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from baselines import BASELINES, baseline_module, run_baseline
from baselines import morphing, shuffle
from baselines.cli import main as cli_main
from baselines.common import network_a

SMALL = "mnist-small"


# --------------------------------------------------------------------------- shuffling


def test_key_permutation_is_keyed_and_invertible():
    p = shuffle.key_permutation("alice")
    assert sorted(p.tolist()) == list(range(784))
    assert np.array_equal(p, shuffle.key_permutation("alice"))
    assert not np.array_equal(p, shuffle.key_permutation("bob"))
    x = np.arange(2 * 784).reshape(2, 784)
    assert np.array_equal(shuffle.unshuffle_pixels(shuffle.shuffle_pixels(x, p), p), x)


def test_permuted_first_layer_equals_plain_network():
    torch.manual_seed(0)
    model = network_a()
    perm = shuffle.key_permutation(1)
    x = torch.rand(64, 784)
    out_plain = model(x)
    out_keyed = shuffle.permute_first_layer(model, perm)(shuffle.shuffle_pixels(x, perm))
    torch.testing.assert_close(out_keyed, out_plain, rtol=0, atol=1e-5)


@given(st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_recover_permutation_exact_on_distinct_columns(d, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(d)
    plain = rng.integers(0, 256, size=(6, d), dtype=np.uint8)
    plain[0] = rng.permutation(256)[:d]  # a row of distinct values pins every column
    est, pinned = shuffle.recover_permutation(plain, plain[:, perm])
    assert pinned.all()
    assert np.array_equal(est, perm)


def test_recover_permutation_rejects_unrelated_pairs():
    a = np.arange(12, dtype=np.uint8).reshape(2, 6)
    with pytest.raises(ValueError, match="not related"):
        shuffle.recover_permutation(a, a + 1)


def test_pixels_matched_counts_columns():
    rng = np.random.default_rng(0)
    plain = rng.integers(0, 256, size=(5, 50), dtype=np.uint8)
    perm = rng.permutation(50)
    assert shuffle.pixels_matched(plain, plain[:, perm]) == 50
    assert shuffle.pixels_matched(plain, rng.integers(0, 2**62, size=(5, 50))) == 0


@pytest.fixture(scope="module")
def shuffle_result():
    return shuffle.run(dataset=SMALL, train_limit=None, epochs=4, seed=0, attack_pool=2000,
                       attack_ks=(1, 2, 5, 100, 2000))


def test_shuffle_with_key_near_plain_without_key_near_chance(shuffle_result):
    m = shuffle_result["models"]["network-a"]
    assert m["plain"] > 0.8
    assert m["with_key"] > m["plain"] - 0.05
    assert m["without_key"] < 0.3
    # no retraining: the permuted plain network is the plain network
    assert m["no_retraining"] == pytest.approx(m["plain"], abs=1e-9)


def test_shuffle_attack_recovers_permutation(shuffle_result):
    atk = shuffle_result["attack"]
    pinned = [e["pixels_pinned"] for e in atk["per_k"]]
    assert pinned == sorted(pinned) and 0 < pinned[0] < pinned[-1]
    assert all(e["pixels_correct"] >= e["pixels_pinned"] for e in atk["per_k"])
    k = atk["smallest_k_exact"]
    assert k is not None and k <= 2000
    assert atk["at_smallest_k"]["pixels_pinned"] == 784 - atk["pixels_unused_by_pool"]
    assert atk["per_k"][-1]["test_images_restored"] > 0.95


# --------------------------------------------------------------------------- morphing


@pytest.mark.parametrize("block", [4, 7])
def test_morphing_operator_is_well_conditioned_and_blockwise(block):
    m = morphing.morphing_matrix("k", block * block)
    assert np.linalg.cond(m) < np.e ** 2 + 1e-6
    t = morphing.morphing_operator("k", block)
    img = np.random.default_rng(0).random((28, 28))
    out = (t @ img.reshape(-1)).reshape(28, 28)
    patch = img[block:2 * block, :block].reshape(-1)
    np.testing.assert_allclose(out[block:2 * block, :block].reshape(-1), m @ patch, atol=1e-12)


@pytest.mark.parametrize("block", [None, 7])
def test_augmented_layer_is_lossless(block):
    torch.manual_seed(0)
    model = network_a()
    t = morphing.morphing_operator(3, block)
    x = torch.rand(256, 784)
    out = morphing.augment_first_layer(model, t)(morphing.morph(x, t))
    torch.testing.assert_close(out, model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("n", [5, 49, 120])
def test_least_squares_recovers_matrix_with_k_ge_d(n):
    m = morphing.morphing_matrix("secret", n)
    x = np.random.default_rng(1).standard_normal((n + 3, n))
    y = x @ m.T
    a = morphing.recover_inverse(x[:n], y[:n])  # k = d pairs
    np.testing.assert_allclose(a, np.linalg.inv(m), atol=1e-8)
    a_short = morphing.recover_inverse(x[:n - 1], y[:n - 1])  # k = d - 1: not determined
    assert np.abs(a_short - np.linalg.inv(m)).max() > 1e-3


@pytest.fixture(scope="module")
def morph_result():
    return morphing.run(dataset=SMALL, train_limit=None, epochs=4, seed=0, block=None,
                        attack_ks=(1, 100, 2000))


def test_morphing_augmented_layer_matches_plain_accuracy(morph_result):
    r = morph_result
    assert r["accuracy_plain"] > 0.8
    assert r["augmented_prediction_agreement"] >= 0.998
    assert r["augmented_max_logit_diff"] < 1e-3
    assert abs(r["accuracy"] - r["accuracy_plain"]) <= 0.002
    assert r["accuracy_without_key"] < 0.35
    assert r["overhead"]["cloud_compute_overhead"] == 0.0


def test_morphing_attack_error_falls_with_k(morph_result):
    per_k = morph_result["attack"]["per_k"]
    errs = [e["test_rel_error"] for e in per_k]
    assert errs == sorted(errs, reverse=True)
    assert errs[0] > 0.5 and errs[-1] < 0.1
    cp = morph_result["attack"]["chosen_plaintext"]
    assert cp["matrix_rel_error_at_k"] < 1e-8 < cp["matrix_rel_error_at_k_minus_1"]


def test_blockwise_morphing_recovered_exactly_from_few_images():
    r = morphing.run(dataset=SMALL, train_limit=500, test_limit=200, epochs=1, block=7,
                     attack_ks=(1, 2, 5, 10, 50))
    atk = r["attack"]
    assert atk["smallest_k_exact"] is not None and atk["smallest_k_exact"] <= 10
    exact = [e for e in atk["per_k"] if e["k"] >= atk["smallest_k_exact"]]
    assert all(e["rank"] == 49 and e["matrix_rel_error"] < 1e-9 for e in exact)
    assert atk["per_k"][0]["test_rel_error"] > 0.1  # one image does not span 49 dimensions


# --------------------------------------------------------------------------- registry and CLI


def test_registry_and_cli(tmp_path, capsys):
    assert set(BASELINES) == {"shuffle", "morphing", "gan-remap", "fedavg", "secret-sharing"}
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_module("nope")
    out = tmp_path / "shuffle.json"
    rc = cli_main(["shuffle", "--dataset", SMALL, "--train-limit", "300", "--test-limit", "100",
                   "--epochs", "1", "--json-out", str(out), "--set", "attack_ks=(1, 2)",
                   "--set", "attack_pool=300"])
    assert rc == 0 and out.is_file()
    assert '"scheme": "key-pixel-shuffling"' in capsys.readouterr().out
    r = run_baseline("shuffle", dataset=SMALL, train_limit=200, test_limit=50, epochs=1,
                     attack_ks=(1,), attack_pool=200)
    assert r["scheme"] == "key-pixel-shuffling"


def test_shuffle_summary_says_when_a_k_was_not_reached():
    """``compare --quick`` printed "k=None" when its small pool never reached the figure."""
    from baselines.shuffle import attack_summary
    atk = {"per_k": [{"k": 1, "pixels_pinned": 60}, {"k": 2, "pixels_pinned": 158},
                     {"k": 1000, "pixels_pinned": 700}], "pixels": 784, "pool_size": 1000,
           "k_restore_99pct": None, "smallest_k_exact": None}
    text = attack_summary(atk)
    assert "None" not in text and "up to k=1000 known pairs" in text and "1000 pairs tried" in text
    atk.update(k_restore_99pct=2000, smallest_k_exact=1500)
    assert "k=2000 restore >=99%" in attack_summary(atk) and "pinned at k=1500" in attack_summary(atk)
