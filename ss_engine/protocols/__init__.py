"""SPMD protocols: each party calls the same function with its own PartyContext.

Every protocol that communicates is a coroutine (a generator): a round is a ``yield`` of a
request, sub-protocols compose with ``yield from``, and a per-party ``Scheduler`` merges
the rounds of all concurrent tasks (``protocols.rounds``).  Names carry the operands'
visibility: ``_ss`` secret x secret, ``_sp`` secret x public, ``_s`` one secret operand.
Every docstring states rounds and bytes sent per party.
"""
from .beaver import (MaskedOperand, conv2d_ss, mask_and_open, matmul_masked, matmul_ss, mul_masked,
                     mul_ss, product_share, square_s)
from .binary import and_ss, and_tree_ss
from .compare import (argmax_s, b2a_s, b2a_select_s, drelu_s, lt_ss, max_s, msb_xor_s, relu_s)
from .forms import FormTerm, LinearForm, form_mul
from .exp import exp_s
from .nonlinear import sigmoid_s, softmax_s
from .normalized import log_s, reciprocal_s, rsqrt_s
from .fused import trunc_mask_open_s, trunc_relu_s
from .opening import open_many, reveal_s
from .rounds import Scheduler, StepPlan, gather, join, run, spawn
from .truncation import trunc_many_s, trunc_s

__all__ = [
    "MaskedOperand", "mask_and_open", "product_share", "matmul_masked", "mul_masked", "mul_ss",
    "matmul_ss", "conv2d_ss", "square_s", "and_ss", "and_tree_ss", "msb_xor_s", "b2a_s",
    "b2a_select_s", "drelu_s", "relu_s", "lt_ss", "max_s", "argmax_s", "FormTerm", "LinearForm",
    "form_mul", "exp_s", "log_s", "reciprocal_s", "rsqrt_s", "sigmoid_s", "softmax_s", "open_many", "reveal_s", "trunc_s",
    "trunc_many_s", "trunc_relu_s", "trunc_mask_open_s", "Scheduler", "StepPlan", "gather",
    "join", "run", "spawn",
]
