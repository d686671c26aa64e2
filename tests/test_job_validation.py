"""TrainJob checks every field's type and range (issue 10: epochs=1.5 and batch_size="x"
passed submit and failed later as "internal error")."""
from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ss_engine.job import FIELD_RULES, ChoiceRule, FloatRule, IntRule, JobError, ModelRule, TrainJob

#: values of the wrong type for any field
WRONG_TYPES = [None, "x", "1", b"1", [1], {"a": 1}, True, False, np.bool_(True)]


def test_every_field_has_a_rule():
    assert set(FIELD_RULES) == {f.name for f in fields(TrainJob)}


def _bad_values(rule):
    if isinstance(rule, ModelRule):   # on the wire a model is its description, a mapping
        return [*WRONG_TYPES, 3, "network-a", {"layers": "x"}, {"bogus": 1}]
    if isinstance(rule, ChoiceRule):
        return [*WRONG_TYPES, 3, 1.5, "no-such-choice"]
    if isinstance(rule, IntRule):
        return [*WRONG_TYPES, 1.5, float(rule.lo), math.nan, rule.lo - 1, rule.hi + 1]
    return [*WRONG_TYPES, math.nan, math.inf, -math.inf,
            rule.lo if rule.lo_open else math.nextafter(rule.lo, -math.inf),
            rule.hi if rule.hi_open else math.nextafter(rule.hi, math.inf)]


@pytest.mark.parametrize("name", sorted(FIELD_RULES))
def test_bad_values_refused_with_one_line_naming_the_field(name):
    for v in _bad_values(FIELD_RULES[name]):
        with pytest.raises(JobError) as e:
            TrainJob.from_dict({name: v})
        msg = str(e.value)
        assert msg.startswith((f"{name} must be", f"{name}: ")) and "\n" not in msg, (v, msg)


def _edge_values(rule):
    if isinstance(rule, IntRule):
        return st.sampled_from([rule.lo, rule.hi, rule.lo + 1, rule.hi - 1]) | \
            st.integers(rule.lo, rule.hi)
    lo = math.nextafter(rule.lo, math.inf) if rule.lo_open else rule.lo
    hi = math.nextafter(rule.hi, -math.inf) if rule.hi_open else rule.hi
    return st.sampled_from([lo, hi]) | st.floats(lo, hi)


NUMERIC = sorted(n for n, r in FIELD_RULES.items() if isinstance(r, (IntRule, FloatRule)))


@given(data=st.data(), name=st.sampled_from(NUMERIC))
def test_values_at_every_bound_accepted_and_normalised(data, name):
    rule = FIELD_RULES[name]
    v = data.draw(_edge_values(rule))
    job = TrainJob.from_dict({name: v})
    got = getattr(job, name)
    assert got == v and type(got) is (float if isinstance(rule, FloatRule) else int)
    assert TrainJob.from_dict(job.to_dict()) == job   # what both servers hash is stable


def test_numpy_scalars_and_ints_for_floats_are_normalised():
    job = TrainJob(epochs=np.int64(2), lr=1, momentum=np.float32(0.5))
    assert (job.epochs, job.lr, job.momentum) == (2, 1.0, 0.5)
    assert type(job.epochs) is int and type(job.lr) is float
    with pytest.raises(JobError, match="unknown job fields"):
        TrainJob.from_dict({"epochs": 1, "rm -rf": 2})
