"""The owner's data files: every bad file gets a one-line error naming the file, row or
column; splits are seeded; normalisation is fitted on the training part and bounded."""
import numpy as np
import pytest

from ss_engine.config import FixedPointConfig
from ss_engine.owner import DataBoundError, data_bound, encode_inputs
from ss_engine.request import RequestError, TrainRequest, prepare
from ss_engine.userdata import DataError, fit_normalizer, load_data, read_data

from examples.byom import write_csv


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,1\n"


@pytest.mark.parametrize("text, kw, needle", [
    (GOOD, {"label_column": "target"}, "no column 'target'; columns: a, b, label"),
    (GOOD.replace("3,4,1", "3,nan,1"), {}, "row 3, column 'b': 'nan' is not a finite number"),
    (GOOD.replace("3,4,1", "3,,1"), {}, "row 3, column 'b': '' is not a number"),
    (GOOD.replace("3,4,1", "3,4"), {}, "row 3 has 2 fields, the header 3"),
    (GOOD.replace("5,6,0", "5,six,0"), {}, "row 4, column 'b': 'six' is not a number"),
    (GOOD.replace("5,6,0", "5,6,0.5"), {}, "label 0.5 of sample"),
    (GOOD.replace("5,6,0", "5,6,7"), {}, "labels in column 'label' must be 0..1 (the model has 2 outputs)"),
    ("a,b,label\n", {}, "no data rows after the header"),
    ("", {}, "empty file"),
    (GOOD, {"label_column": None}, "needs --label-column NAME"),
])
def test_bad_csv_files_name_the_file_row_or_column(tmp_path, text, kw, needle):
    p = _csv(tmp_path, text)
    kw = {"label_column": "label", **kw}
    with pytest.raises(DataError) as e:
        load_data(p, input_shape=(2,), outputs=2, test_split=0.4, **kw)
    msg = str(e.value)
    assert needle in msg and "d.csv" in msg and "\n" not in msg


def test_bad_npz_files_and_shape_mismatches(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"d.npz: an .npz data set needs arrays 'x' and 'y'; it holds \['images', 'labels'\]"):
        load_data(str(p), input_shape=(2,), outputs=2)
    np.savez(p, x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="'x' has 4 samples but 'y' has 3"):
        load_data(str(p), input_shape=(2,), outputs=2)
    x = np.zeros((10, 3))
    x[7, 1] = np.nan
    np.savez(p, x=x, y=np.zeros(10))
    with pytest.raises(DataError, match="sample 7 of 'x' holds NaN"):
        load_data(str(p), input_shape=(3,), outputs=2)
    np.savez(p, x=np.zeros((10, 8, 8)), y=np.zeros(10))
    with pytest.raises(DataError, match=r"samples have shape \(8, 8\) \(64 values\); the model takes \(784,\)"):
        load_data(str(p), input_shape=(784,), outputs=10)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        load_data(str(tmp_path / "bad.npz"), input_shape=(2,), outputs=2)
    with pytest.raises(DataError, match="unknown data format"):
        load_data(_csv(tmp_path, "x", "d.txt"), input_shape=(2,), outputs=2)


def test_separate_test_file_and_seeded_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    tr = write_csv(tmp_path / "tr.csv", x, y, label="label")
    te = write_csv(tmp_path / "te.csv", x[:7], y[:7], label="label")
    d = load_data(str(tr), input_shape=(3,), outputs=2, label_column="label", test=str(te))
    assert len(d.x_train) == 50 and len(d.x_test) == 7
    a = read_data(str(tr), label_column="label", test_split=0.2, seed=3)
    b = read_data(str(tr), label_column="label", test_split=0.2, seed=3)
    assert np.array_equal(a.x_test, b.x_test) and len(a.x_test) == 10 and len(a.x_train) == 40
    c = read_data(str(tr), label_column="label", test_split=0.2, seed=4)
    assert not np.array_equal(a.x_test, c.x_test)
    bad = write_csv(tmp_path / "bad.csv", x[:, :2], y, label="label")
    with pytest.raises(DataError, match="bad.csv: samples have shape"):
        load_data(str(tr), input_shape=(3,), outputs=2, label_column="label", test=str(bad))
    with pytest.raises(DataError, match="either --test or --test-split"):
        read_data(str(tr), label_column="label", test=str(te), test_split=0.1)


def test_normalisation_is_fitted_on_training_data_per_feature_or_channel():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 3, size=(200, 4)) * np.array([1, 10, 100, 0])
    n = fit_normalizer("standard", x, (4,))
    z = n.apply(x)
    assert np.allclose(z[:, :3].mean(0), 0, atol=1e-4) and np.allclose(z[:, :3].std(0), 1, atol=1e-3)
    assert np.all(z[:, 3] == 0)  # a constant feature keeps scale 1
    u = fit_normalizer("unit", x, (4,)).apply(x)
    assert np.allclose(u[:, :3].min(0), 0) and np.allclose(u[:, :3].max(0), 1, atol=1e-6)
    imgs = rng.normal(size=(30, 2, 3, 3)) + np.array([0, 50])[None, :, None, None]
    per_channel = fit_normalizer("standard", imgs, (2, 3, 3)).apply(imgs).reshape(30, 2, 9)
    assert np.allclose(per_channel.mean(axis=(0, 2)), 0, atol=1e-4)
    assert fit_normalizer("none", x, (4,)).apply(x).dtype == np.float32


def test_data_beyond_the_fixed_point_bound_is_refused_clearly(tmp_path):
    fx = FixedPointConfig(frac_bits=16)
    assert data_bound(fx) == 2.0 ** 15
    with pytest.raises(DataBoundError, match=r"value 40000 \(sample 1, feature 2\) exceeds the fixed-point data bound 32768"):
        encode_inputs(np.array([[0, 0, 0], [0, 0, 40000.0]]), fx)
    x = np.random.default_rng(2).normal(size=(20, 2)) * 1e6
    p = write_csv(tmp_path / "big.csv", x, np.arange(20) % 2, label="label")
    req = TrainRequest.build(model=str(_model_json(tmp_path)), dataset=str(p), label_column="label",
                             normalize="none", secure_eval=0, progress=False)
    from ss_engine.request import encode_training_inputs
    with pytest.raises(RequestError, match="big.csv .normalised with none.: value .* exceeds the fixed-point data bound"):
        encode_training_inputs(prepare(req))


def _model_json(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('{"input_shape": [2], "layers": [{"type": "linear", "in_features": 2, "out_features": 2}]}')
    return p
