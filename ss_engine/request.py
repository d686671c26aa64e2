"""One training request, built once by the CLI (or a script) and consumed by every runtime.

A :class:`TrainRequest` says *what* to train: the model (a built-in name, ``PATH.json``,
``PATH.py:FUNCTION``, or from Python a torch ``nn.Sequential``), the data
(:class:`DataRequest`: a name, a file or in-memory arrays), the schedule (:class:`Schedule`)
and the outputs (:class:`Outputs`).  *Where* it runs is the runtime's own argument: the local
runtime (``local_train.run_local_training``) or servers (``client.train.train_remote``).
Both call :func:`prepare` (model, data, job, initial weights) and :func:`share_training_inputs`
(the same sharing order, so a test seed reproduces one runtime in the other bit for bit).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import FixedPointConfig
from .description import DescriptionError, ModelDescription, init_params, zoo_model
from .encoding import encode
from .job import JobError, TrainJob
from .owner import encode_inputs, encode_labels, encode_targets, share_arrays
from .prg import PRG
from .sharing import share
from .userdata import ArraySource, DataError, DataSet, fit_data, read_data

__all__ = ["TrainRequest", "DataRequest", "Schedule", "Outputs", "RequestError", "Prepared",
           "prepare", "share_training_inputs", "encode_training_inputs", "load_model"]


class RequestError(ValueError):
    """A training request cannot be carried out as given (one line, naming what is wrong)."""


@dataclass(frozen=True)
class DataRequest:
    dataset: str | ArraySource = "mnist"  # built-in name | PATH.npz | PATH.csv | arrays
    label_column: str | None = None      # CSV: the column holding labels or targets
    test: str | ArraySource | None = None  # a separate test file (same format) or arrays
    test_split: float | None = None      # else hold out this fraction (default 0.2)
    normalize: str = "standard"          # standard | unit | none
    task: str = "classification"         # classification | regression
    train_limit: int | None = None
    test_limit: int | None = None


@dataclass(frozen=True)
class Schedule:
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 0.1
    optimizer: str = "sgd"               # sgd | adam
    beta1: float = 0.9                   # Adam's decay rates and eps
    beta2: float = 0.999
    eps: float = 1e-8
    loss_every: int = 0


@dataclass(frozen=True)
class Outputs:
    json_out: str | None = None
    plot_out: str | None = None
    export: str | None = None            # PATH.pt2 | PATH.pt | PATH.onnx
    compare_plaintext: bool = False
    secure_eval: int = 1000              # test samples for secure inference at the end
    progress: bool = True


@dataclass(frozen=True)
class TrainRequest:
    model: object = "network-a"          # built-in name | PATH.json | PATH.py:FUNCTION | torch module
    data: DataRequest = field(default_factory=DataRequest)
    schedule: Schedule = field(default_factory=Schedule)
    outputs: Outputs = field(default_factory=Outputs)
    frac_bits: int = 16
    seed: int = 0                        # public: initial weights, batch order, test split

    @classmethod
    def build(cls, **settings) -> "TrainRequest":
        """A request from flat settings, each sorted into its part by name (every field
        name is unique across the parts): ``TrainRequest.build(dataset="x.csv", epochs=3)``."""
        parts = {"data": DataRequest, "schedule": Schedule, "outputs": Outputs}
        top = {k: settings.pop(k) for k in list(settings) if k in cls.__dataclass_fields__
               and k not in parts}
        for name, part in parts.items():
            mine = {k: settings.pop(k) for k in list(settings) if k in part.__dataclass_fields__}
            top[name] = part(**mine)
        if settings:
            raise TypeError(f"unknown request settings {sorted(settings)}")
        return cls(**top)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A request made concrete: the job, the initial weights and the normalised data."""

    request: TrainRequest
    job: TrainJob
    init: dict
    data: DataSet
    fixed: FixedPointConfig

    @property
    def model(self) -> ModelDescription:
        return self.job.model


def _load_torch_module(path: Path, func: str):
    if not path.is_file():
        raise RequestError(f"{path}: no such model file")
    name = f"ss_engine_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RequestError(f"{path}: cannot be imported as a Python module")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001 - the user's file: report, do not crash
        raise RequestError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(name, None)
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise RequestError(f"{path}: no function {func!r}")
    try:
        net = fn()
    except Exception as exc:  # noqa: BLE001
        raise RequestError(f"{path}:{func}() raised {type(exc).__name__}: {exc}") from None
    from torch import nn
    if not isinstance(net, nn.Module):
        raise RequestError(f"{path}:{func}() must return a torch nn.Module, got {type(net).__name__}")
    return net.eval()


def _from_module(net, sample_shape: tuple, name: str) -> tuple[ModelDescription, dict]:
    from .nn.convert import from_torch, infer_input_shape
    desc, params = from_torch(net, infer_input_shape(net, sample_shape))
    return replace(desc, name=name), params


def load_model(ref, sample_shape: tuple, seed: int) -> tuple[ModelDescription, dict]:
    """(description, float32 initial weights) of ``ref``: a built-in name or a ``.json``
    description (weights drawn with torch's default init from ``seed``), ``PATH.py:FUNC``
    (a function returning a torch nn.Module; its own weights), or a torch module itself."""
    if not isinstance(ref, str):
        from torch import nn
        if not isinstance(ref, nn.Module):
            raise RequestError(f"a model is a name, a path or a torch nn.Module, not "
                               f"{type(ref).__name__}")
        return _from_module(ref, sample_shape, type(ref).__name__)
    if ":" in ref and ref.split(":", 1)[0].endswith(".py"):
        file, func = ref.split(":", 1)
        return _from_module(_load_torch_module(Path(file), func), sample_shape,
                            f"{Path(file).name}:{func}")
    if ref.endswith(".py"):
        raise RequestError(f"{ref}: name the function that returns the model, as {ref}:FUNCTION")
    if ref.endswith(".json"):
        desc = ModelDescription.load(ref)
        return (desc if desc.name else replace(desc, name=Path(ref).name)), init_params(desc, seed)
    desc = zoo_model(ref)
    return desc, init_params(desc, seed)


def prepare(req: TrainRequest) -> Prepared:
    """Read the model and the data, check them against each other, build the job."""
    d, s = req.data, req.schedule
    try:
        fixed = FixedPointConfig(frac_bits=req.frac_bits)
        raw = read_data(d.dataset, label_column=d.label_column, test=d.test, test_split=d.test_split,
                        train_limit=d.train_limit, test_limit=d.test_limit, seed=req.seed)
        desc, init = load_model(req.model, raw.sample_shape, req.seed)
        job = TrainJob(model=desc, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                       momentum=s.momentum, weight_decay=s.weight_decay, lr_step=s.lr_step,
                       lr_gamma=s.lr_gamma, shuffle_seed=req.seed, loss_every=s.loss_every,
                       task=d.task, optimizer=s.optimizer, beta1=s.beta1, beta2=s.beta2, eps=s.eps)
        data = fit_data(raw, input_shape=desc.input_shape, outputs=desc.num_outputs, task=d.task,
                        normalize=d.normalize)
    except (DataError, DescriptionError, JobError) as exc:
        raise RequestError(str(exc)) from None
    except ValueError as exc:  # FixedPointConfig
        raise RequestError(str(exc)) from None
    return Prepared(req, job, init, data, fixed)


def encode_training_inputs(prep: Prepared) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fixed-point (params, x, y) the owner and trainer share; RequestError when normalised
    data exceed the fixed-point data bound."""
    fx, data, job = prep.fixed, prep.data, prep.job
    try:
        x = encode_inputs(data.x_train, fx, f"{data.name} (normalised with {data.normalizer.kind})")
        y = (encode_labels(data.y_train, fx, job.model.num_outputs) if job.task == "classification"
             else encode_targets(data.y_train, fx, job.model.num_outputs))
        params = {k: encode(v, fx) for k, v in prep.init.items()}
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return params, x, y


def share_training_inputs(prep: Prepared, prg: PRG) -> tuple[tuple[dict, dict], tuple, tuple]:
    """((params0, params1), (x0, x1), (y0, y1)), shared in this order with ``prg``."""
    params, x, y = encode_training_inputs(prep)
    return share_arrays(params, prg), share(x, prg), share(y, prg)
