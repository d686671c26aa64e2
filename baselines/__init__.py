"""Plaintext-preprocessing baselines beside the engine, each with its attack (issue 6).

Every scheme module exposes ``run(dataset=..., train_limit=..., epochs=..., seed=...,
json_out=None, **options) -> dict``; the result always carries ``scheme``, ``accuracy``,
``accuracy_plain``, ``time_ratio_vs_plain``, ``cloud_sees``, ``attack``, ``attack_summary``
and ``trust`` (the columns of ``baselines/compare.py``).

Modules are imported on demand so that running one scheme does not import the others
(``fedavg`` and ``secret-sharing`` import the engine; the rest need only torch).
"""

from __future__ import annotations

import importlib

__all__ = ["BASELINES", "run_baseline", "baseline_module"]

BASELINES: dict[str, str] = {
    "shuffle": "baselines.shuffle",
    "morphing": "baselines.morphing",
    "gan-remap": "baselines.gan_remap",
    "fedavg": "baselines.fedavg",
    "secret-sharing": "baselines.secret_sharing",
}


def baseline_module(name: str):
    try:
        return importlib.import_module(BASELINES[name])
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}") from None


def run_baseline(name: str, **kwargs) -> dict:
    """``run`` of the named scheme with keyword options (see each module's ``run``)."""
    return baseline_module(name).run(**kwargs)
