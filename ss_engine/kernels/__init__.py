"""Numba kernels over the ring Z_2^64 (int64, wrap-around), each with a pure-numpy twin.

The lowest layer of ss_engine: imports only numpy and numba.  Every public kernel ``f`` has
a twin ``f_np`` with the same signature that is the test oracle (bit-for-bit equal).
Elementwise ring arithmetic is plain numpy on int64 and is not wrapped here, except the
truncation's loops, which run on every tensor of a training step.

* :mod:`.matmul`  ``ring_matmul``, ``ring_matmul_batched``, ``ring_matmul_any``, ``ring_matmul_bt``
* :mod:`.conv`    ``im2col`` (and ``im2col_t``, its transpose), ``col2im`` (torch weight
  layout), ``conv_output_hw``
* :mod:`.bits`    ``pack_bits``, ``unpack_bits``, ``bit_slices``, ``from_bit_slices``
* :mod:`.gf2`     ``and_nodes`` (the dealer's mask products), ``xor_terms`` (one level of
  the comparison's GF(2) circuits on bit-sliced words)
* :mod:`.select`  ``bit_select`` (a bit-to-arithmetic conversion's select in one pass)
* :mod:`.trunc`   ``trunc_split`` (the dealer's one-pass loop of the exact truncation)
* :mod:`.steps`   ``step_share``, ``step_product`` (step functions of comparison bits, and
  their products with a linear form, in one pass: the nonlinear protocols' normalisation)
* :mod:`.forms`   ``trunc_public``, ``trunc_coeff``, ``trunc_share``, ``trunc_form_mul`` (a
  truncation's result as a linear form: its share and its product with a one-term form)
* :mod:`._runtime`  threading layer and per-call scheduling (``runtime_info``); importing
  this package selects the threading layer, see that module's docstring; ``serial_kernels``
  keeps one thread's calls serial.
"""
from ._runtime import NUM_THREADS_ENV, KernelRuntimeInfo, runtime_info, serial_kernels
from .bits import (bit_slices, bit_slices_np, from_bit_slices, from_bit_slices_np, pack_bits,
                   pack_bits_np, unpack_bits, unpack_bits_np, words_for)
from .forms import (trunc_coeff, trunc_coeff_np, trunc_form_mul, trunc_form_mul_np, trunc_public,
                    trunc_public_np, trunc_share, trunc_share_np)
from .conv import col2im, col2im_np, conv_output_hw, im2col, im2col_np, im2col_t, im2col_t_np
from .gf2 import and_nodes, and_nodes_np, xor_terms, xor_terms_np
from .matmul import (ring_matmul, ring_matmul_any, ring_matmul_any_np, ring_matmul_batched,
                     ring_matmul_batched_np, ring_matmul_bt, ring_matmul_bt_np, ring_matmul_np)
from .select import bit_select, bit_select_np
from .steps import step_product, step_product_np, step_share, step_share_np
from .trunc import trunc_split, trunc_split_np

__all__ = [
    # matrix products
    "ring_matmul", "ring_matmul_np",
    "ring_matmul_batched", "ring_matmul_batched_np",
    "ring_matmul_any", "ring_matmul_any_np",
    "ring_matmul_bt", "ring_matmul_bt_np",
    # convolution lowering
    "im2col", "im2col_np", "im2col_t", "im2col_t_np", "col2im", "col2im_np", "conv_output_hw",
    # bit packing / slicing
    "pack_bits", "pack_bits_np", "unpack_bits", "unpack_bits_np",
    "bit_slices", "bit_slices_np", "from_bit_slices", "from_bit_slices_np", "words_for",
    # GF(2) circuits
    "and_nodes", "and_nodes_np", "xor_terms", "xor_terms_np",
    # bit-to-arithmetic select
    "bit_select", "bit_select_np",
    # truncation
    "trunc_split", "trunc_split_np",
    # step functions of comparison bits
    "step_share", "step_share_np", "step_product", "step_product_np",
    # truncation results as linear forms
    "trunc_public", "trunc_public_np", "trunc_coeff", "trunc_coeff_np", "trunc_share", "trunc_share_np",
    "trunc_form_mul", "trunc_form_mul_np",
    # runtime
    "runtime_info", "KernelRuntimeInfo", "NUM_THREADS_ENV", "serial_kernels",
]
