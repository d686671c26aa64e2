"""GAN class remapping: the pipeline classifies the hidden classes; the attack's figures."""

import pytest
import torch

from baselines import gan_remap

SMALL = "mnist-small"


@pytest.fixture(scope="module")
def gan_result(tmp_path_factory):
    png = tmp_path_factory.mktemp("gan") / "samples.png"
    return gan_remap.run(dataset=SMALL, train_limit=None, epochs=3, seed=0, gan_epochs=10,
                         vae_epochs=15, png_out=png)


def test_generator_shapes():
    vae = gan_remap.DecoyVAE()
    g = gan_remap.Generator(vae.dec)
    x = torch.rand(5, 784)
    out = gan_remap.convert(g, x)
    assert out.shape == (5, 784) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, gan_remap.convert(g, x))  # fixed noise seed
    assert all(not p.requires_grad for p in g.decoder.parameters())
    d = gan_remap.Discriminator()
    assert d(x, torch.tensor([0, 1, 0, 1, 1])).shape == (5,)


def test_pipeline_classifies_hidden_classes(gan_result):
    r = gan_result
    assert r["accuracy_direct"] > 0.95
    assert r["accuracy_pipeline"] > 0.9  # chance is 0.5
    assert r["generator"]["train_seconds"] > 0 and r["generator"]["parameters"] > 0


def test_cloud_sees_decoys_and_attack_reports(gan_result, tmp_path):
    atk = gan_result["attack"]
    assert atk["attacker_plain_accuracy"] > 0.8
    assert atk["top1_is_decoy_class"] > 0.5  # the plain classifier mostly reads the decoy
    assert atk["top1_is_original_class"] < 0.2
    assert 0.0 <= atk["secret_pair_accuracy"] <= 1.0
    assert sum(atk["top1_histogram"]) == gan_result["test_size"]
    from pathlib import Path
    png = Path(gan_result["png"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
