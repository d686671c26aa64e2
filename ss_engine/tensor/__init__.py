"""Secret values and the secure operations on them.

``SharedTensor`` (``value``) is one party's share of a fixed-point tensor with its scale, its
linear form and its masked opening; ``ops`` are the coroutines that compute on them
(``z = yield from ops.mul(x, y)``), deciding truncations and openings from the values'
scales and caches.  Layers, losses and the public API are written with these alone.
"""
from . import ops
from .value import SharedTensor

__all__ = ["SharedTensor", "ops"]
