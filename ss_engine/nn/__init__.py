"""Layers, losses, optimizers and models on secret shares (explicit backward per layer)."""
from .convert import ConversionError, from_torch
from .layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from .loss import MSELoss, SoftmaxCrossEntropy
from .models import build_model, param_names
from .module import NO_HOOKS, Module, Parameter, StepHooks
from .optim import SGD, Adam

__all__ = [
    "AvgPool2d", "Conv2d", "Flatten", "Linear", "MaxPool2d", "ReLU", "Sequential", "MSELoss",
    "SoftmaxCrossEntropy", "build_model", "param_names", "Module", "Parameter", "SGD", "Adam",
    "StepHooks", "NO_HOOKS", "from_torch", "ConversionError",
]
