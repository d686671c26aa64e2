"""Shared fixtures: a seeded local runtime (two party threads + in-process dealer)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

from ss_engine.config import EngineConfig, FixedPointConfig, ProtocolConfig
from ss_engine.encoding import decode
from ss_engine.simulate import LocalRuntime

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: fractional-bit settings every precision-sensitive test runs under (the documented range)
FRAC_BITS = (12, 16, 20, 24)


def make_runtime(frac_bits: int = 16, cmp_bits: int = 64, seed: bytes = b"tests") -> LocalRuntime:
    cfg = EngineConfig(fixed=FixedPointConfig(frac_bits=frac_bits),
                       protocol=ProtocolConfig(cmp_bits=cmp_bits))
    return LocalRuntime(cfg, seed=seed, timeout=60.0)


@pytest.fixture
def rt() -> LocalRuntime:
    return make_runtime()


def opened(pair, frac_bits: int | None = None):
    """Reconstruct the two parties' results (ring elements, or decoded floats)."""
    v = np.asarray(pair[0]) + np.asarray(pair[1])
    return v if frac_bits is None else decode(v, frac_bits)
