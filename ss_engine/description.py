"""A model is a value: one typed description and the one interpreter of its shapes.

A :class:`ModelDescription` is a frozen input shape and a tuple of frozen layers.  It is
what travels inside a training job (JSON-compatible ``to_dict``), and every component
derives its shapes from it through :meth:`ModelDescription.shapes` and
:meth:`ModelDescription.param_shapes`: the secure build (``nn.models.build_model``), the torch
twin, the servers' validation of uploads (``job.expected_uploads``), the data owner's
encoding and the export.  Nothing here imports the protocols, torch or the network stack.

Layers (what the secure engine computes on shares)::

    linear     in_features, out_features             y = x W^T + b, input (in_features,)
    conv2d     in_channels, out_channels, kernel_size (kh, kw), stride, padding
    relu
    maxpool2d  kernel_size                           non-overlapping k x k windows
    avgpool2d  kernel_size                           non-overlapping k x k windows
    flatten                                          (C, H, W) -> (C*H*W,)

Parameter names are those of the torch twin, a flat ``nn.Sequential`` of the same layers:
``"<layer index>.weight"`` and ``"<layer index>.bias"``.  Converting a torch model
(``ss_engine.nn.from_torch``) drops Identity and Dropout(p=0) and folds BatchNorm into the
preceding Conv/Linear, so the description holds only the layers above.

The literature's networks are entries of :data:`ZOO` (a tuple, not a registry to patch),
looked up with :func:`zoo_model`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["DescriptionError", "Linear", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten",
           "Layer", "LayerShape", "ModelDescription", "ModelCaps", "ZooEntry", "ZOO", "zoo_names",
           "zoo_model", "describe", "init_params", "LAYER_KINDS", "FORMAT"]

FORMAT = "ss-engine.model/1"


class DescriptionError(ValueError):
    """A model description is malformed or its shapes do not fit together."""


def _positive(name: str, v, where: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise DescriptionError(f"{where}: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int
    kind = "linear"

    def validate(self, where: str) -> None:
        _positive("in_features", self.in_features, where)
        _positive("out_features", self.out_features, where)

    def out_shape(self, shape: tuple, where: str) -> tuple:
        if len(shape) != 1:
            raise DescriptionError(f"{where}: needs a flat input (add a flatten layer), got {shape}")
        if shape[0] != self.in_features:
            raise DescriptionError(f"{where}: in_features {self.in_features} does not match its "
                                   f"input of {shape[0]} values")
        return (self.out_features,)

    def params(self) -> dict:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    @property
    def fan_in(self) -> int:
        return self.in_features


@dataclass(frozen=True)
class Conv2d:
    in_channels: int
    out_channels: int
    kernel_size: tuple          # (kh, kw)
    stride: int = 1
    padding: int = 0
    kind = "conv2d"

    def __post_init__(self):
        k = self.kernel_size
        object.__setattr__(self, "kernel_size", (k, k) if isinstance(k, (int, np.integer))
                           and not isinstance(k, bool) else tuple(k))

    def validate(self, where: str) -> None:
        _positive("in_channels", self.in_channels, where)
        _positive("out_channels", self.out_channels, where)
        if len(self.kernel_size) != 2:
            raise DescriptionError(f"{where}: kernel_size must be an integer or [kh, kw]")
        for k in self.kernel_size:
            _positive("kernel_size", k, where)
        _positive("stride", self.stride, where)
        _positive("padding", self.padding, where, minimum=0)

    def out_shape(self, shape: tuple, where: str) -> tuple:
        if len(shape) != 3:
            raise DescriptionError(f"{where}: needs a (channels, height, width) input, got {shape}")
        c, h, w = shape
        if c != self.in_channels:
            raise DescriptionError(f"{where}: in_channels {self.in_channels} does not match its "
                                   f"input's {c} channels")
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding - kh) // self.stride + 1
        ow = (w + 2 * self.padding - kw) // self.stride + 1
        if oh < 1 or ow < 1:
            raise DescriptionError(f"{where}: kernel {kh}x{kw} does not fit its {h}x{w} input")
        return (self.out_channels, oh, ow)

    def params(self) -> dict:
        return {"weight": (self.out_channels, self.in_channels) + tuple(self.kernel_size),
                "bias": (self.out_channels,)}

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]


@dataclass(frozen=True)
class _Pool:
    kernel_size: int

    def validate(self, where: str) -> None:
        _positive("kernel_size", self.kernel_size, where)

    def out_shape(self, shape: tuple, where: str) -> tuple:
        k = self.kernel_size
        if len(shape) != 3:
            raise DescriptionError(f"{where}: needs a (channels, height, width) input, got {shape}")
        c, h, w = shape
        if h % k or w % k:
            # the secure pooling takes non-overlapping windows that tile the input exactly
            raise DescriptionError(f"{where}: window {k} must divide its {h}x{w} input "
                                   "(only non-overlapping windows that tile the input are supported)")
        return (c, h // k, w // k)

    def params(self) -> dict:
        return {}


@dataclass(frozen=True)
class MaxPool2d(_Pool):
    kind = "maxpool2d"


@dataclass(frozen=True)
class AvgPool2d(_Pool):
    kind = "avgpool2d"


@dataclass(frozen=True)
class _NoParams:
    def validate(self, where: str) -> None:
        pass

    def params(self) -> dict:
        return {}


@dataclass(frozen=True)
class ReLU(_NoParams):
    kind = "relu"

    def out_shape(self, shape: tuple, where: str) -> tuple:
        return shape


@dataclass(frozen=True)
class Flatten(_NoParams):
    kind = "flatten"

    def out_shape(self, shape: tuple, where: str) -> tuple:
        return (math.prod(shape),)


Layer = Union[Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten]
_CLASSES = (Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten)
#: the layer kinds a description may hold, as written in JSON
LAYER_KINDS = tuple(c.kind for c in _CLASSES)
_BY_KIND = {c.kind: c for c in _CLASSES}


@dataclass(frozen=True)
class LayerShape:
    """One layer as the interpreter sees it: where it is and what flows in and out."""

    index: int
    layer: Layer
    in_shape: tuple
    out_shape: tuple


@dataclass(frozen=True)
class ModelCaps:
    """Size limits a server enforces on a job's model (0: no limit)."""

    max_params: int = 0
    max_activations_per_batch: int = 0


@dataclass(frozen=True)
class ModelDescription:
    """An input shape (one sample, no batch axis) and the layers, validated on creation."""

    input_shape: tuple
    layers: tuple
    name: str = ""
    _shapes: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        shape = tuple(self.input_shape)
        if not 1 <= len(shape) <= 3:
            raise DescriptionError(f"input_shape must have 1 to 3 axes, got {shape}")
        shape = tuple(_positive("input_shape", s, "input_shape") for s in shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise DescriptionError("name must be a string of at most 200 characters")
        if not self.layers:
            raise DescriptionError("a model needs at least one layer")
        out = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, _CLASSES):
                raise DescriptionError(f"layer {i}: {type(layer).__name__} is not a supported layer; "
                                       f"supported: {', '.join(LAYER_KINDS)}")
            where = f"layer {i} ({layer.kind})"
            layer.validate(where)
            nxt = layer.out_shape(shape, where)
            out.append(LayerShape(i, layer, shape, nxt))
            shape = nxt
        if len(shape) != 1:
            raise DescriptionError(f"the last layer must give a flat output (add flatten and linear "
                                   f"layers), got {shape}")
        object.__setattr__(self, "_shapes", tuple(out))

    # -- the interpreter -------------------------------------------------------------------
    def shapes(self) -> tuple[LayerShape, ...]:
        """Every layer with its input and output shape (one sample)."""
        return self._shapes

    @property
    def num_outputs(self) -> int:
        return self._shapes[-1].out_shape[0]

    @property
    def input_size(self) -> int:
        """Values per sample, as the data owner uploads them (flattened)."""
        return math.prod(self.input_shape)

    def param_shapes(self) -> dict[str, tuple]:
        """``{"<index>.weight": shape, "<index>.bias": shape}`` in layer order (torch's keys)."""
        return {f"{s.index}.{k}": v for s in self._shapes for k, v in s.layer.params().items()}

    def param_count(self) -> int:
        return sum(math.prod(v) for v in self.param_shapes().values())

    def activations_per_sample(self) -> int:
        """Values every layer outputs for one sample (what a step holds per sample)."""
        return sum(math.prod(s.out_shape) for s in self._shapes)

    def check_caps(self, caps: ModelCaps, batch_size: int) -> None:
        """DescriptionError naming the figure when the model exceeds a cap."""
        if caps.max_params and self.param_count() > caps.max_params:
            raise DescriptionError(f"the model has {self.param_count():,} parameters; this server "
                                   f"accepts at most {caps.max_params:,}")
        act = self.activations_per_sample() * int(batch_size)
        if caps.max_activations_per_batch and act > caps.max_activations_per_batch:
            raise DescriptionError(f"the model produces {act:,} activations per batch of "
                                   f"{batch_size}; this server accepts at most "
                                   f"{caps.max_activations_per_batch:,}")

    def summary(self) -> str:
        lines = [f"input {self.input_shape}"]
        for s in self._shapes:
            hyper = {k: v for k, v in _layer_dict(s.layer).items() if k != "type"}
            args = ", ".join(f"{k}={v}" for k, v in hyper.items())
            lines.append(f"{s.index:>3} {s.layer.kind}({args}) -> {s.out_shape}")
        lines.append(f"{self.param_count():,} parameters, {self.num_outputs} outputs")
        return "\n".join(lines)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "input_shape": list(self.input_shape),
             "layers": [_layer_dict(layer) for layer in self.layers]}
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d) -> "ModelDescription":
        if not isinstance(d, dict):
            raise DescriptionError("a model description must be a mapping")
        unknown = set(d) - {"format", "input_shape", "layers", "name"}
        if unknown:
            raise DescriptionError(f"unknown model fields {sorted(unknown)}")
        if d.get("format", FORMAT) != FORMAT:
            raise DescriptionError(f"unknown model format {d.get('format')!r} (expected {FORMAT!r})")
        shape, layers = d.get("input_shape"), d.get("layers")
        if not isinstance(shape, (list, tuple)):
            raise DescriptionError("input_shape must be a list of integers")
        if not isinstance(layers, (list, tuple)) or len(layers) > 1000:
            raise DescriptionError("layers must be a list (at most 1000 layers)")
        return cls(tuple(shape), tuple(_layer_from(i, x) for i, x in enumerate(layers)),
                   d.get("name", ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelDescription":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise DescriptionError(f"{source}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except DescriptionError as exc:
            raise DescriptionError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path) -> "ModelDescription":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise DescriptionError(f"{p}: cannot read ({exc.strerror})") from None
        return cls.from_json(text, str(p))


def _layer_dict(layer) -> dict:
    d = {"type": layer.kind}
    if isinstance(layer, Linear):
        d.update(in_features=layer.in_features, out_features=layer.out_features)
    elif isinstance(layer, Conv2d):
        d.update(in_channels=layer.in_channels, out_channels=layer.out_channels,
                 kernel_size=list(layer.kernel_size), stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, (MaxPool2d, AvgPool2d)):
        d.update(kernel_size=layer.kernel_size)
    return d


def _layer_from(i: int, d) -> Layer:
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise DescriptionError(f"layer {i}: must be a mapping with a \"type\"")
    kind = d["type"]
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise DescriptionError(f"layer {i}: unsupported layer type {kind!r}; supported: "
                               f"{', '.join(LAYER_KINDS)}")
    fields = {k: v for k, v in d.items() if k != "type"}
    known = set(cls.__dataclass_fields__)
    if set(fields) - known:
        raise DescriptionError(f"layer {i} ({kind}): unknown fields {sorted(set(fields) - known)}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise DescriptionError(f"layer {i} ({kind}): {exc}") from None


def init_params(model: "ModelDescription | str", seed: int) -> dict[str, np.ndarray]:
    """Torch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.

    Plaintext, on the trainer's side (a public seed); keys as in ``param_shapes``.
    """
    desc = describe(model)
    rng = np.random.default_rng(seed)
    params = {}
    for s in desc.shapes():
        shapes = s.layer.params()
        if not shapes:
            continue
        bound = 1.0 / np.sqrt(s.layer.fan_in)
        for k in ("weight", "bias"):
            params[f"{s.index}.{k}"] = rng.uniform(-bound, bound, size=shapes[k]).astype(np.float32)
    return params


# -- the literature's networks ---------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: ModelDescription
    source: str


def _mnist(name: str, *layers) -> ModelDescription:
    first = layers[0]
    return ModelDescription((784,) if isinstance(first, Linear) else (1, 28, 28), layers, name)


_MINIONN = (Conv2d(1, 16, 5), ReLU(), MaxPool2d(2), Conv2d(16, 16, 5), ReLU(), MaxPool2d(2),
            Flatten(), Linear(256, 100), ReLU(), Linear(100, 10))

#: Architectures checked against the authors' public code: SecureNN (Wagh, Gupta, Chandran,
#: PoPETs 2019; snwagh/securenn-public src/main.cpp) and Falcon (Wagh et al., PoPETs 2021;
#: snwagh/falcon-public src/secondary.cpp ``selectNetwork``).  Letters follow SecureNN's
#: evaluation (A SecureML, B Chameleon, C MiniONN, D LeNet); EzPC's Athos benchmarks number
#: the same four networks differently.  Falcon runs max-pool before ReLU (the same function;
#: ``build_model`` swaps them the same way) and ends its MNIST nets with a ReLU on the logits,
#: which these entries leave out (the softmax follows the last linear layer).
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("network-a", _mnist("network-a", Linear(784, 128), ReLU(), Linear(128, 128), ReLU(),
                                 Linear(128, 10)),
             "SecureML (Mohassel & Zhang 2017) 3-layer MLP 784-128-128-10; SecureNN/Falcon network A"),
    ZooEntry("network-b", _mnist("network-b", Conv2d(1, 5, 5, stride=2, padding=2), ReLU(), Flatten(),
                                 Linear(980, 100), ReLU(), Linear(100, 10)),
             "Chameleon (Riazi et al. 2018) CNN: conv 5x5 stride 2 padding 2 to 5 channels, FC "
             "980-100-10 (SecureNN's ChameleonCNNConfig; Falcon's 'Sarda' variant uses a 2x2 "
             "stride-2 kernel); SecureNN network B"),
    ZooEntry("network-c", _mnist("network-c", *_MINIONN),
             "MiniONN (Liu et al. 2017) MNIST CNN: conv 5x5 1-16, pool 2, conv 5x5 16-16, pool 2, "
             "FC 256-100-10; SecureNN network C"),
    ZooEntry("network-d", _mnist("network-d", Conv2d(1, 20, 5), ReLU(), MaxPool2d(2), Conv2d(20, 50, 5),
                                 ReLU(), MaxPool2d(2), Flatten(), Linear(800, 500), ReLU(),
                                 Linear(500, 10)),
             "LeNet (LeCun et al. 1998) as in SecureNN/Falcon: conv 5x5 1-20, pool 2, conv 5x5 "
             "20-50, pool 2, FC 800-500-10; SecureNN network D"),
    ZooEntry("lenet", _mnist("lenet", *_MINIONN),
             "this project's historical name for network-c (the MiniONN CNN); kept so earlier "
             "results and commands still name it"),
)


def zoo_names() -> list[str]:
    return [e.name for e in ZOO]


def zoo_model(name: str) -> ModelDescription:
    for e in ZOO:
        if e.name == name:
            return e.description
    raise DescriptionError(f"unknown model {name!r}; built-in models: {', '.join(zoo_names())} "
                           "(or give a PATH.json or PATH.py:FUNCTION)")


def describe(model: "ModelDescription | str") -> ModelDescription:
    """A description as given, or the built-in network of that name."""
    if isinstance(model, ModelDescription):
        return model
    if isinstance(model, str):
        return zoo_model(model)
    raise DescriptionError(f"expected a model description or a built-in name, got {type(model).__name__}")
