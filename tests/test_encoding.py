import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ss_engine.config import FixedPointConfig
from ss_engine.encoding import EncodingError, as_ring, decode, encode

from .conftest import FRAC_BITS


@pytest.mark.parametrize("f", FRAC_BITS)
def test_encode_decode_within_half_ulp(f):
    cfg = FixedPointConfig(frac_bits=f)
    rng = np.random.default_rng(f)
    bound = cfg.bound
    x = np.concatenate([rng.uniform(-bound, bound, 10_000) * 0.999, [0.0, 2.0 ** -f, -(2.0 ** -f),
                        bound * (1 - 2.0 ** -40), -bound * (1 - 2.0 ** -40)]])
    x = x[np.abs(np.rint(x * 2.0 ** f)) < 2.0 ** cfg.value_bits]
    err = np.abs(decode(encode(x, cfg), cfg) - x)
    # float64 has 53 bits: near the bound the grid is coarser than 2^-f
    tol = np.maximum(2.0 ** -(f + 1), np.abs(x) * 2.0 ** -52)
    assert np.all(err <= tol)


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=6),
                  elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_encode_roundtrip_property(x):
    cfg = FixedPointConfig(frac_bits=16)
    assert np.all(np.abs(decode(encode(x, cfg), cfg) - x) <= 2.0 ** -17 + 1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite(bad):
    with pytest.raises(EncodingError, match="NaN or infinity"):
        encode(np.array([1.0, bad]), 16)


@pytest.mark.parametrize("f", FRAC_BITS)
def test_encode_rejects_out_of_range_naming_the_bound(f):
    cfg = FixedPointConfig(frac_bits=f)
    with pytest.raises(EncodingError, match=rf"2\^{62 - f}"):
        encode(np.array([cfg.bound]), cfg)
    with pytest.raises(EncodingError):
        encode(-cfg.bound * 1.0000001, cfg)
    # one ulp inside the bound encodes
    inside = cfg.bound - 2.0 ** (62 - f - 52)
    assert decode(encode(inside, cfg), cfg) == pytest.approx(inside)


def test_ring_wraps_around():
    a = as_ring(np.array([np.iinfo(np.int64).max]))
    assert (a + 1)[0] == np.iinfo(np.int64).min
    assert as_ring(np.array([2 ** 64 - 1], dtype=np.uint64))[0] == -1


def test_as_ring_rejects_floats():
    with pytest.raises(TypeError, match="integers"):
        as_ring(np.array([1.5]))


def test_config_validates():
    with pytest.raises(ValueError):
        FixedPointConfig(frac_bits=0)
    with pytest.raises(ValueError):
        FixedPointConfig(frac_bits=16, value_bits=63)
