"""Layers with explicit forward and backward on secret shares.

Round structure of one training step (what the counters in the tests check):
  * every weight is masked and opened once, in the step's first message, together with the
    input batch; forward and backward reuse those masks (dX = dY W needs no new opening);
  * a layer input is opened once and reused for the weight gradient (X^T dY);
  * an output gradient dY is opened once and used for both dW and dX;
  * ReLU bits and max-pool one-hots are opened with the next forward opening, so their
    backward products cost one round each;
  * a Linear/Conv output feeding a ReLU (directly or through max-pools, which compare the
    untruncated values in a ring widened by f) is not truncated on its own: the ReLU
    truncates and compares in one opening (``trunc_relu_s``); in backward the Linear/Conv input
    gradient goes up untruncated and the ReLU truncates it and multiplies by its bit in one
    round (``trunc_many_mul_s``), which also truncates the pending weight gradients.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..encoding import encode
from ..protocols.beaver import (MaskedOperand, conv_out_shape, mask_and_open, matmul_masked,
                                mul_masked, product_share)
from ..protocols.compare import max_s, relu_s
from ..protocols.fused import trunc_many_mul_s, trunc_relu_s
from ..protocols.truncation import trunc_many_s, trunc_s
from ..tensor import SharedTensor
from .module import BackwardState, ForwardState, Module, Parameter

__all__ = ["Linear", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Sequential"]


def _open_with_pending(x: SharedTensor, state: ForwardState, x_op: MaskedOperand | None
                       ) -> MaskedOperand:
    """Open the layer input (unless already open) together with deferred secrets."""
    pending = state.take()
    if x_op is not None and not pending:
        return x_op
    shares = ([] if x_op is not None else [x.share]) + [s for s, _ in pending]
    ops = mask_and_open(x.ctx, shares, "fwd_open")
    if x_op is None:
        x_op, ops = ops[0], ops[1:]
    for (_, owner), op in zip(pending, ops):
        owner.receive_opened(op)
    return x_op


def _finish_output(ctx, z: np.ndarray, truncate: bool) -> SharedTensor:
    if truncate:
        return SharedTensor(ctx, trunc_s(ctx, z, ctx.frac_bits, "fwd_trunc"))
    return SharedTensor(ctx, z, 2 * ctx.frac_bits)  # the ReLU above truncates it


def _finish_grads(ctx, weight: Parameter, dw: np.ndarray, dx: np.ndarray | None,
                  state: BackwardState | None, raw_input_grad: bool) -> SharedTensor | None:
    """Hand dW to the optimizer untruncated (if it takes raw gradients), or truncate it now or
    with the next backward truncation; truncate dX unless the ReLU below does; return dX."""
    def set_grad(g, bits=ctx.frac_bits):
        weight.grad, weight.grad_bits = g, bits

    dw_now = None
    if state is not None and state.raw_weight_grads:
        set_grad(dw, 2 * ctx.frac_bits)
    elif state is not None and (dx is None or raw_input_grad):
        state.defer_trunc(dw, set_grad)
    else:
        dw_now = dw
    if dx is not None and raw_input_grad and state is not None:
        return SharedTensor(ctx, dx, 2 * ctx.frac_bits)
    if dx is None and dw_now is None:
        return None
    # this round truncates now: let the weight gradients still waiting ride along
    pending = state.take() if state is not None else []
    raws = [r for r, _ in pending] + ([dw_now] if dw_now is not None else []) + \
        ([dx] if dx is not None else [])
    out = trunc_many_s(ctx, raws, ctx.frac_bits, "bwd_trunc")
    for (_, setter), g in zip(pending, out):
        setter(g)
    if dw_now is not None:
        set_grad(out[len(pending)])
    return SharedTensor(ctx, out[-1]) if dx is not None else None


class Linear(Module):
    """y = x W^T + b with W (out, in) as in torch."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, name: str = "linear"):
        self.weight = Parameter(f"{name}.weight", np.asarray(weight, np.int64))
        self.bias = Parameter(f"{name}.bias", np.asarray(bias, np.int64))
        self._x_op: MaskedOperand | None = None

    def parameters(self):
        return [self.weight, self.bias]

    def weights_to_open(self):
        return [self.weight]

    def forward(self, x, state, x_op=None, truncate=True):
        ctx = x.ctx
        if x.ndim != 2 or x.shape[1] != self.weight.value.shape[1]:
            raise ValueError(f"{self.weight.name}: input shape {x.shape} does not fit weight "
                             f"{self.weight.value.shape}")
        self._x_op = _open_with_pending(x, state, x_op)
        z = matmul_masked(ctx, self._x_op, self.weight.opened, transpose_right=True)
        z += self.bias.value << ctx.frac_bits
        return _finish_output(ctx, z, truncate)

    def backward(self, dy, need_input_grad=True, state=None, raw_input_grad=False):
        ctx = dy.ctx
        (dy_op,) = mask_and_open(ctx, [dy.share], "bwd_open")
        dw = matmul_masked(ctx, dy_op, self._x_op, transpose_left=True)
        dx = matmul_masked(ctx, dy_op, self.weight.opened) if need_input_grad else None
        self.bias.grad = dy.share.sum(axis=0)
        return _finish_grads(ctx, self.weight, dw, dx, state, raw_input_grad)


class Conv2d(Module):
    """2-D convolution, weight (out, in, kh, kw) as in torch; im2col on the ring kernel."""

    def __init__(self, weight, bias, stride: int = 1, padding: int = 0, name: str = "conv"):
        self.weight = Parameter(f"{name}.weight", np.asarray(weight, np.int64))
        self.bias = Parameter(f"{name}.bias", np.asarray(bias, np.int64))
        self.stride, self.padding = int(stride), int(padding)
        self._x_op: MaskedOperand | None = None

    def parameters(self):
        return [self.weight, self.bias]

    def weights_to_open(self):
        return [self.weight]

    @property
    def _conv(self) -> tuple:
        w = self.weight.value
        return (w.shape[2], w.shape[3], self.stride, self.padding)

    def forward(self, x, state, x_op=None, truncate=True):
        ctx = x.ctx
        if x.ndim != 4:
            raise ValueError(f"{self.weight.name}: input must be (N, C, H, W), got {x.shape}")
        n, o, oh, ow = conv_out_shape(x.shape, self.weight.value.shape, self.stride, self.padding)
        self._x_op = _open_with_pending(x, state, x_op)
        cols = product_share(ctx, "conv", self._x_op, self.weight.opened, conv=self._conv)
        cols += self.bias.value << ctx.frac_bits
        z = np.ascontiguousarray(cols.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
        return _finish_output(ctx, z, truncate)

    def backward(self, dy, need_input_grad=True, state=None, raw_input_grad=False):
        ctx = dy.ctx
        n, o, oh, ow = dy.shape
        dy_cols = np.ascontiguousarray(dy.share.transpose(0, 2, 3, 1).reshape(-1, o))
        (dy_op,) = mask_and_open(ctx, [dy_cols], "bwd_open")
        dw = product_share(ctx, "conv_wgrad", dy_op, self._x_op, conv=self._conv)
        dx = None
        if need_input_grad:
            dcols = product_share(ctx, "conv_dgrad", dy_op, self.weight.opened)
            kh, kw, s, p = self._conv
            dx = kernels.col2im(dcols, self._x_op.shape, kh, kw, s, p)
        self.bias.grad = dy_cols.sum(axis=0)
        return _finish_grads(ctx, self.weight, dw.reshape(self.weight.value.shape), dx, state,
                             raw_input_grad)


class ReLU(Module):
    """Keeps its DReLU bit from forward (MP-SPDZ style); backward is one product."""

    def __init__(self):
        self._bit: np.ndarray | None = None
        self._bit_op: MaskedOperand | None = None

    def forward(self, x, state, x_op=None):
        ctx = x.ctx
        if x.frac_bits > ctx.frac_bits:  # an untruncated product: truncate and compare at once
            y, bit = trunc_relu_s(ctx, x.share, x.frac_bits - ctx.frac_bits)
        else:
            y, bit = relu_s(ctx, x.share)
        self._bit, self._bit_op = bit, None
        state.defer(bit, self)
        return SharedTensor(ctx, y)

    def receive_opened(self, op):
        self._bit_op = op

    def backward(self, dy, need_input_grad=True, state=None):
        ctx = dy.ctx
        if dy.frac_bits > ctx.frac_bits:
            # trunc(dy) * bit in the truncation round, with the weight gradients waiting on it
            if self._bit_op is None:
                (self._bit_op,) = mask_and_open(ctx, [self._bit], "bwd_open")
            pending = state.take() if state is not None else []
            out = trunc_many_mul_s(ctx, [r for r, _ in pending] + [dy.share],
                                   dy.frac_bits - ctx.frac_bits,
                                   [None] * len(pending) + [self._bit_op], "bwd_trunc")
            for (_, setter), g in zip(pending, out):
                setter(g)
            return SharedTensor(ctx, out[-1])
        if self._bit_op is None:
            dy_op, self._bit_op = mask_and_open(ctx, [dy.share, self._bit], "bwd_open")
        else:
            (dy_op,) = mask_and_open(ctx, [dy.share], "bwd_open")
        # the bit is an integer 0/1, so the product needs no truncation
        return SharedTensor(ctx, mul_masked(ctx, dy_op, self._bit_op))


def _windows(x: np.ndarray, k: int) -> np.ndarray:
    n, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"pooling window {k} must divide the input size {h}x{w}")
    v = x.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
    return np.ascontiguousarray(v.reshape(n * c * (h // k) * (w // k), k * k))


def _unwindows(cols: np.ndarray, shape: tuple, k: int) -> np.ndarray:
    n, c, h, w = shape
    v = cols.reshape(n, c, h // k, w // k, k, k).transpose(0, 1, 2, 4, 3, 5)
    return np.ascontiguousarray(v.reshape(shape))


class MaxPool2d(Module):
    """Non-overlapping k x k max pooling; keeps the one-hot argmax for backward."""

    def __init__(self, kernel_size: int = 2):
        self.k = int(kernel_size)
        self._hot = self._hot_op = self._shape = None

    def forward(self, x, state, x_op=None):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d wants (N, C, H, W), got {x.shape}")
        n, c, h, w = x.shape
        self._shape = x.shape
        # differences of activations: the narrower pooling ring (ProtocolConfig.pool_cmp_bits),
        # widened by the extra fractional bits of an untruncated input
        extra = x.frac_bits - x.ctx.frac_bits
        bits = min(64, x.ctx.config.protocol.pool_cmp_bits + max(extra, 0))
        mx, hot = max_s(x.ctx, _windows(x.share, self.k), axis=-1, return_onehot=True, bits=bits)
        self._hot, self._hot_op = hot, None
        state.defer(hot, self)
        return SharedTensor(x.ctx, mx.reshape(n, c, h // self.k, w // self.k), x.frac_bits)

    def receive_opened(self, op):
        self._hot_op = op

    def backward(self, dy, need_input_grad=True, state=None):
        ctx = dy.ctx
        flat = np.ascontiguousarray(dy.share.reshape(-1))
        if self._hot_op is None:
            self._hot_op, dy_op = mask_and_open(ctx, [self._hot, flat], "bwd_open")
        else:
            (dy_op,) = mask_and_open(ctx, [flat], "bwd_open")
        cols = mul_masked(ctx, self._hot_op, dy_op)  # one-hot (R, k*k) times dY per row
        return SharedTensor(ctx, _unwindows(cols, self._shape, self.k))


class AvgPool2d(Module):
    """Non-overlapping k x k average pooling (a public scale: one truncation each way)."""

    def __init__(self, kernel_size: int = 2):
        self.k = int(kernel_size)
        self._shape = None

    def forward(self, x, state, x_op=None):
        ctx = x.ctx
        n, c, h, w = x.shape
        self._shape = x.shape
        s = _windows(x.share, self.k).sum(axis=1) * encode(1.0 / self.k ** 2, ctx.config.fixed)
        return SharedTensor(ctx, trunc_s(ctx, s, ctx.frac_bits).reshape(n, c, h // self.k, w // self.k))

    def backward(self, dy, need_input_grad=True, state=None):
        ctx = dy.ctx
        g = trunc_s(ctx, dy.share * encode(1.0 / self.k ** 2, ctx.config.fixed), ctx.frac_bits)
        cols = np.repeat(g.reshape(-1, 1), self.k * self.k, axis=1)
        return SharedTensor(ctx, _unwindows(cols, self._shape, self.k))


class Flatten(Module):
    def __init__(self):
        self._shape = None

    def forward(self, x, state, x_op=None):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_input_grad=True, state=None):
        return dy.reshape(self._shape)


class Sequential(Module):
    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def weights_to_open(self):
        return [p for layer in self.layers for p in layer.weights_to_open()]

    def forward(self, x: SharedTensor, state: ForwardState | None = None, x_op=None) -> SharedTensor:
        """Open the input and every weight in one message, then run the layers."""
        state = state or ForwardState()
        weights = self.weights_to_open()
        first_takes_input = isinstance(self.layers[0], (Linear, Conv2d))
        shares = ([x.share] if first_takes_input and x_op is None else []) + [p.value for p in weights]
        ops = mask_and_open(x.ctx, shares, "fwd_open") if shares else []
        if first_takes_input and x_op is None:
            x_op, ops = ops[0], ops[1:]
        for p, op in zip(weights, ops):
            p.opened = op
        for i, layer in enumerate(self.layers):
            if isinstance(layer, (Linear, Conv2d)):
                x = layer.forward(x, state, x_op if i == 0 else None, truncate=not self._feeds_relu(i))
            else:
                x = layer.forward(x, state, x_op if i == 0 else None)
        return x

    def _feeds_relu(self, i: int) -> bool:
        """Whether layer i's output reaches a ReLU through max-pools only: it then stays
        untruncated (max commutes with the truncation) and the ReLU truncates and compares
        in one opening, on the pooled, k^2 times smaller tensor."""
        j = i + 1
        while j < len(self.layers) and isinstance(self.layers[j], MaxPool2d):
            j += 1
        return j < len(self.layers) and isinstance(self.layers[j], ReLU)

    def backward(self, dy: SharedTensor, need_input_grad: bool = False,
                 raw_weight_grads: bool = False):
        """Gradients of every parameter; with ``raw_weight_grads`` the weight gradients stay
        untruncated (2f fractional bits) for an optimizer that truncates them itself."""
        ctx = dy.ctx
        state = BackwardState(raw_weight_grads)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            # the first layer's input gradient is never needed (it is the data)
            need = need_input_grad or i > 0
            if isinstance(layer, (Linear, Conv2d)):
                dy = layer.backward(dy, need, state, raw_input_grad=i > 0 and isinstance(self.layers[i - 1], ReLU))
            else:
                dy = layer.backward(dy, need, state)
            if dy is None:
                break
        pending = state.take()
        if pending:  # the first layer's weight gradient
            outs = trunc_many_s(ctx, [r for r, _ in pending], ctx.frac_bits, "bwd_trunc")
            for (_, setter), g in zip(pending, outs):
                setter(g)
        return dy
