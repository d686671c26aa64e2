"""Layers, losses, optimizer and models on secret shares (explicit backward per layer)."""
from .convert import ConversionError, from_torch
from .layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from .loss import MSELoss, SoftmaxCrossEntropy
from .models import build_model, param_names
from .module import ForwardState, Module, Parameter
from .optim import SGD

__all__ = [
    "AvgPool2d", "Conv2d", "Flatten", "Linear", "MaxPool2d", "ReLU", "Sequential", "MSELoss",
    "SoftmaxCrossEntropy", "build_model", "param_names", "ForwardState", "Module", "Parameter",
    "SGD", "from_torch", "ConversionError",
]
