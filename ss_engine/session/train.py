"""``ss_engine.train``: train a torch model securely on arrays, from Python.

The same request object and runtime as ``ss-engine train --local`` (``request.TrainRequest``
built from the settings, ``local_train.run_local_training``): the model is converted with
``nn.from_torch`` (it starts from its own weights), the data owner's side normalises and
shares the arrays, two party threads and an in-process dealer train on the shares, and
only the caller reconstructs the model.  Returns the trained model as torch and the report
``ss-engine train --json-out`` writes (with the reconstructed ``params``).
"""
from __future__ import annotations

from ..export import exportable_module
from ..local_train import run_local_training
from ..request import TrainRequest, prepare
from ..twin import torch_model
from ..userdata import ArraySource

__all__ = ["train"]


def train(model, x, y, *, x_test=None, y_test=None, runtime_seed: bytes | None = None,
          **settings):
    """Train ``model`` (a torch ``nn.Sequential`` of the layers ``nn.from_torch`` converts)
    on samples ``x`` (N, ...) and labels ``y`` (N,) (or regression targets with
    ``task="regression"``); returns ``(trained_model, report)``.

    ``settings`` are the request's, by name (``TrainRequest.build``): ``epochs``,
    ``batch_size``, ``lr``, ``momentum``, ``weight_decay``, ``lr_step``, ``lr_gamma``,
    ``loss_every``, ``normalize`` (default "standard": the model returned applies it, so it
    takes raw samples like ``model``), ``task``, ``test_split`` (without ``x_test``),
    ``frac_bits``, ``seed`` (initial order of batches), ``compare_plaintext`` (train the
    torch twin too: the report then holds ``plaintext_test_accuracy``), ``secure_eval``,
    ``json_out``, ``plot_out``, ``export``, ``progress`` (default off).  ``runtime_seed``
    (16 bytes, tests only) fixes the dealer keys and the sharing.

    The returned model is an ``nn.Sequential`` of the converted layers (a BatchNorm folded
    into the layer before it), in eval mode, after the normalisation when there is one.
    """
    test = None if x_test is None else ArraySource(x_test, y_test, "test arrays")
    settings.setdefault("progress", False)
    request = TrainRequest.build(model=model, dataset=ArraySource(x, y), test=test, **settings)
    prep = prepare(request)
    report = run_local_training(prep, runtime_seed=runtime_seed)
    params = report["params"]
    if prep.data.normalizer.kind == "none":
        trained = torch_model(prep.model, params).eval()
    else:
        trained = exportable_module(prep.model, params, prep.data.normalizer)
    return trained, report
