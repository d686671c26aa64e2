"""``from_torch``: a torch ``nn.Sequential`` and its weights as (description, float params).

What converts (nested ``nn.Sequential`` are walked in order):

* ``Linear``, ``Conv2d`` (groups 1, dilation 1, zero padding equal on both axes, equal
  strides), ``ReLU``, ``MaxPool2d`` / ``AvgPool2d`` (stride = kernel, no padding),
  ``Flatten`` (start_dim 1, end_dim -1);
* no-ops, dropped: ``Identity`` and ``Dropout`` with p = 0;
* ``BatchNorm1d`` / ``BatchNorm2d`` right after a Linear / Conv2d: folded into it with the
  running (inference) statistics, w' = w g / sqrt(var + eps), b' = (b - mean) g / sqrt(var + eps)
  + beta.  Training then trains the folded layer: the exported model has no BatchNorm.

A layer without bias gets a zero bias (trained like any other).  Anything else is refused
with :class:`ConversionError` naming the layer (its path in the module, e.g. ``features.3``)
and listing what converts.  torch is imported only when this is called.
"""
from __future__ import annotations

import numpy as np

from ..description import (AvgPool2d, Conv2d, DescriptionError, Flatten, Linear, MaxPool2d,
                           ModelDescription, ReLU)

__all__ = ["from_torch", "infer_input_shape", "ConversionError", "SUPPORTED"]

SUPPORTED = ("Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Identity, Dropout(p=0), "
             "BatchNorm1d/BatchNorm2d after a Linear/Conv2d (folded)")


class ConversionError(DescriptionError):
    """A torch module holds a layer with no secure form here."""


def _refuse(path: str, module, why: str = "") -> ConversionError:
    name = type(module).__name__
    return ConversionError(f"layer {path!r} ({name}){': ' + why if why else ' is not supported'}; "
                           f"supported: {SUPPORTED}")


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _walk(module, prefix: str):
    from torch import nn
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _walk(child, path + ".")
        else:
            yield path, child


def _conv(path, m) -> Conv2d:
    if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise _refuse(path, m, "only groups=1, dilation=1 and zero padding are supported")
    pad = m.padding
    if pad == "valid":
        pad = (0, 0)
    if isinstance(pad, str) or len(set(_pair(pad))) != 1 or len(set(_pair(m.stride))) != 1:
        raise _refuse(path, m, "padding and stride must be equal integers on both axes")
    return Conv2d(m.in_channels, m.out_channels, tuple(m.kernel_size), _pair(m.stride)[0],
                  _pair(pad)[0])


def _pool(path, m, cls):
    k = _pair(m.kernel_size)
    stride = k if m.stride in (None, ()) else _pair(m.stride)
    extra = getattr(m, "dilation", 1)
    if k[0] != k[1] or stride != k or _pair(m.padding) != (0, 0) or _pair(extra) != (1, 1) \
            or getattr(m, "return_indices", False) or getattr(m, "divisor_override", None):
        raise _refuse(path, m, "only square windows with stride = kernel_size, no padding")
    return cls(int(k[0]))


def _fold_bn(path, bn, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if bn.running_mean is None or bn.running_var is None:
        raise _refuse(path, bn, "needs running statistics (track_running_stats=True) to be folded")
    mean = bn.running_mean.detach().double().numpy()
    scale = 1.0 / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    beta = np.zeros_like(mean)
    if bn.affine:
        scale = scale * bn.weight.detach().double().numpy()
        beta = bn.bias.detach().double().numpy()
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * scale.reshape(shape), (bias - mean) * scale + beta


def from_torch(module, input_shape) -> tuple[ModelDescription, dict[str, np.ndarray]]:
    """(description, float32 params keyed like the twin's state_dict) of a torch Sequential.

    ``input_shape``: one sample's shape, e.g. ``(30,)`` or ``(1, 8, 8)``.
    """
    from torch import nn
    if not isinstance(module, nn.Sequential):
        raise ConversionError(f"from_torch converts an nn.Sequential (nested ones too); got "
                              f"{type(module).__name__}, whose forward() cannot be read: put its "
                              "layers in an nn.Sequential")
    layers: list = []
    params: dict[str, np.ndarray] = {}
    last_affine: int | None = None  # index in ``layers`` of a Linear/Conv2d a BatchNorm may fold into
    for path, m in _walk(module, ""):
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and m.p == 0):
            continue
        if isinstance(m, nn.Dropout):
            raise _refuse(path, m, f"dropout with p={m.p} is not supported (set p=0)")
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            want = Linear if isinstance(m, nn.BatchNorm1d) else Conv2d
            if last_affine is None or last_affine != len(layers) - 1 or \
                    not isinstance(layers[-1], want):
                raise _refuse(path, m, f"a {type(m).__name__} folds only into a {want.__name__} "
                                       "right before it")
            i = last_affine
            params[f"{i}.weight"], params[f"{i}.bias"] = _fold_bn(
                path, m, params[f"{i}.weight"], params[f"{i}.bias"])
            last_affine = None  # a second BatchNorm in a row has nothing to fold into
            continue
        i = len(layers)
        if isinstance(m, nn.Linear):
            layers.append(Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.Conv2d):
            layers.append(_conv(path, m))
        elif isinstance(m, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(_pool(path, m, MaxPool2d))
        elif isinstance(m, nn.AvgPool2d):
            layers.append(_pool(path, m, AvgPool2d))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise _refuse(path, m, "only Flatten(start_dim=1, end_dim=-1) is supported")
            layers.append(Flatten())
        else:
            raise _refuse(path, m)
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.detach().double().numpy()
            b = (m.bias.detach().double().numpy() if m.bias is not None
                 else np.zeros(w.shape[0]))
            params[f"{i}.weight"], params[f"{i}.bias"] = w, b
            last_affine = i
    desc = ModelDescription(tuple(input_shape), tuple(layers))
    return desc, {k: v.astype(np.float32) for k, v in params.items()}


def infer_input_shape(module, sample_shape: tuple) -> tuple:
    """The input shape a torch Sequential takes for data samples of ``sample_shape``.

    The data's own shape, except that a model starting with a convolution or pooling gets
    (C, H, W): (H, W) samples become (1, H, W) for one input channel, and flat samples are
    refused (their image shape cannot be guessed).
    """
    from torch import nn
    sample_shape = tuple(sample_shape)
    for path, m in _walk(module, ""):
        if isinstance(m, (nn.Identity, nn.Dropout, nn.ReLU)):
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            cin = getattr(m, "in_channels", None)
            if len(sample_shape) == 3:
                return sample_shape
            if len(sample_shape) == 2 and cin in (None, 1):
                return (1,) + sample_shape
            raise ConversionError(f"layer {path!r} ({type(m).__name__}) needs image samples "
                                  f"(C, H, W); the data's samples have shape {sample_shape}: store "
                                  "them as (N, C, H, W) in an .npz")
        return sample_shape
    return sample_shape
