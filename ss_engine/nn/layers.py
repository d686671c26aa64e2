"""Layers with explicit forward and backward on secret shares.

Each layer states its secure operations (``ss_engine.tensor.ops``) and nothing else: no
rounds, labels, deferred openings or fusions.  What the step costs follows from the values:
  * Linear/Conv outputs are untruncated products (2f); the next op that needs them at f
    truncates them, a ReLU in the same opening as its comparison (also through max-pools,
    which compare at any scale);
  * a matmul operand is opened once and its opening kept on the value, so X serves forward
    and X^T dY, W forward and dY W, and dY both gradients: the Beaver bound of bytes;
  * the ReLU bit is a linear form in dealer items, so backward's dy(2f) * bit is one
    truncation round and the bit is never opened;
  * weight gradients stay untruncated (2f) for the optimizer, whose per-parameter update
    the container starts as soon as the layer's backward has produced the gradient;
  * independent requests of concurrent tasks share rounds (the scheduler,
    ``protocols.rounds``).
"""
from __future__ import annotations

import numpy as np

from ..protocols.rounds import resolve
from ..tensor import SharedTensor, ops
from .module import NO_HOOKS, Module, Parameter, StepHooks

__all__ = ["Linear", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Sequential"]


class Linear(Module):
    """y = x W^T + b with W (out, in) as in torch."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, name: str = "linear"):
        self.weight = Parameter(f"{name}.weight", np.asarray(weight, np.int64))
        self.bias = Parameter(f"{name}.bias", np.asarray(bias, np.int64))
        self._x = self._w = None

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.weight.value.shape[1]:
            raise ValueError(f"{self.weight.name}: input shape {x.shape} does not fit weight "
                             f"{self.weight.value.shape}")
        self._x, self._w = x, self.weight.tensor(x.ctx)
        return (yield from ops.matmul(x, self._w, transpose_right=True, bias=self.bias.tensor(x.ctx)))

    def backward(self, dy, need_input_grad=True):
        self.weight.grad = yield from ops.matmul(dy, self._x, transpose_left=True)
        self.bias.grad = dy.sum(axis=0)
        if need_input_grad:
            return (yield from ops.matmul(dy, self._w))
        return None


class Conv2d(Module):
    """2-D convolution, weight (out, in, kh, kw) as in torch; im2col on the ring kernel."""

    def __init__(self, weight, bias, stride: int = 1, padding: int = 0, name: str = "conv"):
        self.weight = Parameter(f"{name}.weight", np.asarray(weight, np.int64))
        self.bias = Parameter(f"{name}.bias", np.asarray(bias, np.int64))
        self.stride, self.padding = int(stride), int(padding)
        self._x = self._w = None

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self.weight.name}: input must be (N, C, H, W), got {x.shape}")
        self._x, self._w = x, self.weight.tensor(x.ctx)
        return (yield from ops.conv2d(x, self._w, self.stride, self.padding,
                                      bias=self.bias.tensor(x.ctx)))

    def backward(self, dy, need_input_grad=True):
        o = dy.shape[1]
        cols = dy.transpose(0, 2, 3, 1).reshape(-1, o)   # (N*OH*OW, O), the kernel's layout
        self.weight.grad = yield from ops.conv2d_weight_grad(cols, self._x, self._w.shape,
                                                             self.stride, self.padding)
        self.bias.grad = cols.sum(axis=0)
        if need_input_grad:
            return (yield from ops.conv2d_input_grad(cols, self._w, self._x.shape, self.stride,
                                                     self.padding))
        return None


class ReLU(Module):
    """Keeps its comparison bit from forward (MP-SPDZ style); backward is one product."""

    def __init__(self):
        self._bit = None

    def forward(self, x):
        y, self._bit = yield from ops.relu(x)
        return y

    def backward(self, dy, need_input_grad=True):
        return (yield from ops.mul(dy, self._bit))


def _windows(x: SharedTensor, k: int) -> SharedTensor:
    n, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"pooling window {k} must divide the input size {h}x{w}")
    v = x.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
    return v.reshape(n * c * (h // k) * (w // k), k * k)


def _unwindows(cols: SharedTensor, shape: tuple, k: int) -> SharedTensor:
    n, c, h, w = shape
    return cols.reshape(n, c, h // k, w // k, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


class MaxPool2d(Module):
    """Non-overlapping k x k max pooling; keeps the one-hot argmax for backward.  Compares
    in the pooling ring (``ProtocolConfig.pool_cmp_bits``), at the input's scale."""

    def __init__(self, kernel_size: int = 2):
        self.k = int(kernel_size)
        self._hot = self._shape = None

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d wants (N, C, H, W), got {x.shape}")
        n, c, h, w = self._shape = x.shape
        mx, self._hot = yield from ops.max_argmax(_windows(x, self.k), axis=-1,
                                                  bits=x.ctx.config.protocol.pool_cmp_bits)
        return mx.reshape(n, c, h // self.k, w // self.k)

    def backward(self, dy, need_input_grad=True):
        cols = yield from ops.mul(self._hot, dy.reshape(-1))  # one-hot (R, k*k) times dY per row
        return _unwindows(cols, self._shape, self.k)


class AvgPool2d(Module):
    """Non-overlapping k x k average pooling: a public scale, so no protocol (the output
    is a product with the constant 1/k^2, untruncated like every product)."""

    def __init__(self, kernel_size: int = 2):
        self.k = int(kernel_size)
        self._shape = None

    def forward(self, x):
        n, c, h, w = self._shape = x.shape
        s = _windows(x, self.k).sum(axis=1) * (1.0 / self.k ** 2)
        return s.reshape(n, c, h // self.k, w // self.k)

    def backward(self, dy, need_input_grad=True):
        g = dy.reshape(-1, 1) * (1.0 / self.k ** 2)
        cols = SharedTensor(g.ctx, np.repeat(g.share, self.k * self.k, axis=1), g.frac_bits)
        return _unwindows(cols, self._shape, self.k)


class Flatten(Module):
    def __init__(self):
        self._shape = None

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_input_grad=True):
        return dy.reshape(self._shape)


class Sequential(Module):
    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def forward(self, x: SharedTensor, hooks: StepHooks = NO_HOOKS):
        for i, layer in enumerate(self.layers):
            with hooks.layer("forward", i, layer, x):
                x = yield from resolve(layer.forward(x))
        return x

    def backward(self, dy: SharedTensor, need_input_grad: bool = False, on_grad=None,
                 hooks: StepHooks = NO_HOOKS):
        """Gradients of every parameter (``p.grad``, at the scale the layer produced).
        ``on_grad(p)`` (a coroutine, optional) runs for each parameter as soon as its layer's
        backward has produced its gradient: the optimizer spawns its update there, so the
        update's truncation shares a round with the rest of backward."""
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            with hooks.layer("backward", i, layer, dy):
                # the first layer's input gradient is never needed (it is the data)
                dy = yield from resolve(layer.backward(dy, need_input_grad or i > 0))
                if on_grad is not None:
                    for p in layer.parameters():
                        yield from on_grad(p)
            if dy is None:
                break
        return dy
