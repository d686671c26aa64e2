"""The data owner's MNIST / Fashion-MNIST loader: real files, checksums, clear errors."""

import gzip
import hashlib
import io
import shutil
import struct

import numpy as np
import pytest

from ss_engine import datasets
from ss_engine.datasets import (
    ChecksumError,
    IDXFormatError,
    load,
    load_dataset,
    normalize,
    read_idx,
)

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_shared = pytest.mark.skipif(
    not (datasets.data_root() / "mnist" / "train-labels-idx1-ubyte.gz").is_file(),
    reason="shared MNIST files not present (set SS_ENGINE_DATA)",
)


@needs_shared
@pytest.mark.parametrize(
    "name, split, counts",
    [
        ("mnist", "train", MNIST_TRAIN),
        ("mnist", "test", MNIST_TEST),
        ("fashion-mnist", "train", [6000] * 10),
        ("fashion-mnist", "test", [1000] * 10),
    ],
)
def test_label_counts_match_readme(name, split, counts):
    images, labels = load_dataset(name, split)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.shape == (sum(counts), 28, 28)
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert not images.flags.writeable


@needs_shared
def test_limit_takes_the_first_examples():
    full_x, full_y = load_dataset("mnist", "test")
    x, y = load_dataset("mnist", "test", limit=123)
    assert x.shape == (123, 28, 28)
    np.testing.assert_array_equal(x, full_x[:123])
    np.testing.assert_array_equal(y, full_y[:123])


@needs_shared
def test_shipped_subset_equals_the_head_of_mnist():
    for split, n in (("train", 2000), ("test", 500)):
        sx, sy = load_dataset("mnist-small", split)
        fx, fy = load_dataset("mnist", split, limit=n)
        assert sx.shape == (n, 28, 28)
        np.testing.assert_array_equal(sx, fx)
        np.testing.assert_array_equal(sy, fy)


def test_shipped_subset_loads_without_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "nowhere"))
    ds = load("mnist-small", "train")
    assert len(ds) == 2000 and ds.images.shape == (2000, 28, 28)
    assert set(np.unique(ds.labels)) == set(range(10))
    assert 0.10 < normalize(ds.images).mean() < 0.16


def test_missing_file_names_path_and_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", "train")
    msg = str(info.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert datasets.ENV_VAR in msg


def test_root_argument_overrides_env(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.ENV_VAR, "/definitely/not/here")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("fashion-mnist", "test", root=tmp_path)


def _copy_small_as_mnist(dst):
    """A tmp data root with the shipped subset laid out as <root>/mnist/ plus SHA256SUMS."""
    (dst / "mnist").mkdir()
    lines = []
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            fname = f"{split}-{kind}-ubyte.gz"
            shutil.copy(datasets._PACKAGE_DATA / f"mnist-small-{fname}", dst / "mnist" / fname)
            digest = hashlib.sha256((dst / "mnist" / fname).read_bytes()).hexdigest()
            lines.append(f"{digest}  mnist/{fname}")
    (dst / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_checksum_mismatch_is_reported(tmp_path):
    _copy_small_as_mnist(tmp_path)
    x, _ = load_dataset("mnist", "test", root=tmp_path)
    assert x.shape == (500, 28, 28)
    target = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", "test", root=tmp_path)


def test_without_sums_file_no_check(tmp_path):
    _copy_small_as_mnist(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()
    _, y = load_dataset("mnist", "train", root=tmp_path)
    assert y.shape == (2000,)


def _gz_idx(path, magic, dims, payload):
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload
    path.write_bytes(gzip.compress(raw))


def test_idx_validation(tmp_path):
    good = tmp_path / "good.gz"
    _gz_idx(good, 0x803, (2, 28, 28), bytes(range(256)) * 6 + bytes(2 * 784 - 1536))
    assert read_idx(good, 0x803).shape == (2, 28, 28)
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(good, 0x801)
    short = tmp_path / "short.gz"
    _gz_idx(short, 0x803, (2, 28, 28), bytes(784))
    with pytest.raises(IDXFormatError, match="payload"):
        read_idx(short)
    bad = tmp_path / "bad.gz"
    _gz_idx(bad, 0x0D03, (1, 1, 1), b"\x00")
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(bad)
    notgz = tmp_path / "notgz.gz"
    notgz.write_bytes(b"plain bytes")
    with pytest.raises(IDXFormatError):
        read_idx(notgz)


def test_label_count_mismatch_rejected(tmp_path):
    (tmp_path / "mnist").mkdir()
    _gz_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", 0x803, (3, 28, 28), bytes(3 * 784))
    _gz_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", 0x801, (2,), b"\x01\x02")
    with pytest.raises(IDXFormatError, match="2 labels for 3 images"):
        load_dataset("mnist", "test", root=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist-small", "validation")


def test_normalize():
    x = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    y = normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    z = normalize(x, standardize=True, dataset="mnist")
    np.testing.assert_allclose(z, (y - 0.1307) / 0.3081, rtol=1e-5)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_verifies_md5_and_renames_only_on_match(monkeypatch, tmp_path):
    payloads = {name: f"fake {name}".encode() for name in datasets._ORIGINAL_MD5["mnist"]}
    fake_md5 = {
        "mnist": {n: hashlib.md5(p).hexdigest() for n, p in payloads.items()},
        "fashion-mnist": datasets._ORIGINAL_MD5["fashion-mnist"],
    }
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return _FakeResponse(payloads[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(datasets.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(datasets, "_ORIGINAL_MD5", fake_md5)
    folder = datasets.download_dataset("mnist", tmp_path)
    assert folder == tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(payloads)
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in urls)
    # present and correct: not fetched again
    urls.clear()
    datasets.download_dataset("mnist", tmp_path)
    assert urls == []

    # a payload that does not match the known hash is never written
    real = "f68b3c2dcbeaaa9fbdd348bbdeb94873"  # the original train-images archive
    monkeypatch.setattr(datasets, "_ORIGINAL_MD5", {
        **fake_md5, "mnist": {"train-images-idx3-ubyte.gz": real}})
    other = tmp_path / "other"
    with pytest.raises(ChecksumError, match="md5"):
        datasets.download_dataset("mnist", other)
    assert list((other / "mnist").iterdir()) == []
