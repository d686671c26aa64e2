"""Layers, losses, optimizer and models on secret shares (explicit backward per layer)."""
from .layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from .loss import MSELoss, SoftmaxCrossEntropy
from .models import INPUT_SHAPES, MODEL_SPECS, build_model, init_params, model_names, param_names
from .module import ForwardState, Module, Parameter
from .optim import SGD

__all__ = [
    "AvgPool2d", "Conv2d", "Flatten", "Linear", "MaxPool2d", "ReLU", "Sequential", "MSELoss",
    "SoftmaxCrossEntropy", "INPUT_SHAPES", "MODEL_SPECS", "build_model", "init_params",
    "model_names", "param_names", "ForwardState", "Module", "Parameter", "SGD",
]
