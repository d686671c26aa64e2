"""Export a trained (reconstructed) model for plain torch, with the owner's normalisation.

``PATH.pt2``  a ``torch.export`` program, batch dimension dynamic, normalisation inside:
              ``model = torch.export.load(PATH).module(); model(x)`` on *raw* samples
              shaped (N, *input_shape), float32 -> logits (or regression outputs).  Loading
              needs torch only.
``PATH.pt``   ``torch.save`` of a dict (loads with ``torch.load(PATH)``, weights only):
              ``state_dict`` (a flat ``nn.Sequential`` of the model's layers: keys
              "<i>.weight"/"<i>.bias"), ``normalization`` {kind, shift, scale} to apply to raw
              samples first as ``(x.flatten(1) - shift) * scale``, ``input_shape``, ``model``
              (the ss-engine description, JSON-compatible) and ``format``.
``PATH.onnx`` an ONNX graph (dynamic batch, normalisation inside); needs the optional
              ``onnx`` extra (``onnx`` and ``onnxscript``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .description import ModelDescription
from .twin import torch_model
from .userdata import Normalizer

__all__ = ["export_model", "check_export_path", "ExportError", "EXPORT_SUFFIXES", "exportable_module"]

EXPORT_SUFFIXES = (".pt2", ".pt", ".onnx")
FORMAT = "ss-engine.export/1"


class ExportError(ValueError):
    """The model cannot be written in the requested format."""


class _Normalize(nn.Module):
    def __init__(self, norm: Normalizer, input_shape: tuple):
        super().__init__()
        self.register_buffer("shift", torch.as_tensor(norm.shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(norm.scale, dtype=torch.float32))
        self.input_shape = tuple(input_shape)

    def forward(self, x):
        return ((x.flatten(1) - self.shift) * self.scale).unflatten(1, self.input_shape)


def exportable_module(desc: ModelDescription, params: dict, norm: Normalizer) -> nn.Module:
    """Raw samples (N, *input_shape) -> outputs: the normalisation, then the model."""
    return nn.Sequential(_Normalize(norm, desc.input_shape), torch_model(desc, params)).eval()


def check_export_path(path: str) -> None:
    """ExportError before any work when ``path``'s format is unknown or unavailable."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ExportError(f"{path}: export format must be one of {', '.join(EXPORT_SUFFIXES)}")
    if suffix == ".onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ExportError(f"{path}: writing ONNX needs the onnx and onnxscript packages "
                              "(pip install 'ss-engine[onnx]'); .pt2 and .pt need nothing more") from None


def export_model(path: str, desc: ModelDescription, params: dict[str, np.ndarray],
                 norm: Normalizer) -> str:
    check_export_path(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".pt":
        sd = torch_model(desc, params).state_dict()
        torch.save({"format": FORMAT, "state_dict": sd, "input_shape": list(desc.input_shape),
                    "normalization": {"kind": norm.kind,
                                      "shift": torch.as_tensor(norm.shift),
                                      "scale": torch.as_tensor(norm.scale)},
                    "model": desc.to_dict()}, path)
        return path
    module = exportable_module(desc, params, norm)
    example = torch.zeros((2,) + desc.input_shape)
    batch = torch.export.Dim("batch", min=1)
    if suffix == ".pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, path)
    else:
        torch.onnx.export(module, (example,), path, input_names=["x"], output_names=["y"],
                          dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    return path
