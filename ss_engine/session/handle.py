"""``Secret``: the caller's handle on a value both parties hold as additive shares.

A handle knows its session, its id and its shape, never its value: ``bool()``,
``float()``, ``np.asarray()`` and pickling raise, ``repr`` shows the shape only, and
``reveal()`` is the one way to see the value (each party hands the caller its shares).

Every method queues an op of :mod:`ss_engine.dispatch` (checked at once, run at the next
reveal or ``flush()``; see ``session.core``) and returns a new handle.  Operands may be
handles of the same session or public numbers and arrays (numpy semantics: broadcasting,
negative axes); a public operand is sent to both parties in the clear.  Each docstring
gives the op's cost per party on inputs of n elements: the rounds it adds to a chain
(independent ops of one batch share rounds) and the bytes each party sends its peer.
"Opened" values: a secret's masked opening is made by the first product that needs it
and reused by every later product with it (the Beaver bound), so it costs once.

Scales follow ``ss_engine.tensor.ops``: a value is at f fractional bits; a product of
two reals is kept untruncated at 2f until an op needs it at f (then truncated exactly in
that op's first round); a comparison result is an integer 0/1 (scale 0).  ``reveal``
decodes at the value's own scale.  Accuracy: + - and products are exact in fixed point up
to one ulp (2^-f) per truncation; a public real is encoded at f (error 2^-(f+1) of it).
Bounds: a value must stay below 2^(62-f) in magnitude, a product below 2^(62-2f) (2^30
at f = 16), comparisons are exact for every such value.
"""
from __future__ import annotations

import numpy as np

from ..dispatch import index_to_wire

__all__ = ["Secret", "where", "concatenate"]


def _is_secret(v) -> bool:
    return isinstance(v, Secret)


class Secret:
    __slots__ = ("_session", "_id", "shape", "__weakref__")
    __array_ufunc__ = None          # numpy must hand ``array + secret`` to us
    __hash__ = None                 # == is elementwise (as in numpy and torch)

    def __init__(self, session, hid: int, shape: tuple):
        self._session, self._id, self.shape = session, hid, tuple(shape)

    # -- no implicit use -------------------------------------------------------------------
    def __bool__(self):
        raise TypeError("a secret has no truth value: reveal() it, or choose with "
                        "sse.where(condition, a, b)")

    def __array__(self, *args, **kwargs):
        raise TypeError("a secret is not an array: reveal() it")

    def _no_number(self, *args):
        raise TypeError("a secret is not a number: reveal() it")

    __float__ = __int__ = __index__ = __complex__ = _no_number

    def __reduce__(self):
        raise TypeError("a secret handle cannot be pickled (it names values held by the parties)")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"Secret(shape={self.shape}, session={type(self._session).__name__})"

    __str__ = __repr__

    # -- shape -----------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("a scalar secret has no length")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _op(self, name: str, *inputs, **params) -> "Secret":
        return self._session._op(name, [self, *inputs], params)

    def reshape(self, *shape) -> "Secret":
        """The same elements in another shape (one -1 allowed).  Rounds 0, bytes 0."""
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._op("reshape", shape=[int(d) for d in shape])

    def flatten(self) -> "Secret":
        """``reshape(-1)``.  Rounds 0, bytes 0."""
        return self.reshape(-1)

    def transpose(self, *axes) -> "Secret":
        """Axes permuted (reversed by default).  Rounds 0, bytes 0."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return self._op("transpose", axes=[int(a) for a in axes] if axes else None)

    @property
    def T(self) -> "Secret":
        return self.transpose()

    def __getitem__(self, idx) -> "Secret":
        """Basic indexing (integers, slices, None, ...).  Rounds 0, bytes 0."""
        return self._op("index", idx=index_to_wire(idx))

    def sum(self, axis=None, keepdims: bool = False) -> "Secret":
        """Sum over ``axis`` (an int, a tuple, or None for all).  Rounds 0, bytes 0; exact."""
        axes = None if axis is None else [int(a) for a in (axis if isinstance(axis, (tuple, list))
                                                           else (axis,))]
        return self._op("sum", axis=axes, keepdims=bool(keepdims))

    def mean(self, axis=None, keepdims: bool = False) -> "Secret":
        """Mean over ``axis``: the sum divided by the public count (see ``/``), at f.
        Rounds 1 (2 for an untruncated product), bytes 8 per element of the result per
        round."""
        s = self.sum(axis, keepdims)
        return s / (self.size // max(s.size, 1))

    # -- arithmetic ------------------------------------------------------------------------
    def __add__(self, other) -> "Secret":
        """x + y (secret or public, broadcast).  Rounds 0, bytes 0; exact."""
        return self._session._op("add", [self, self._session.lift(other)], {})

    __radd__ = __add__

    def __sub__(self, other) -> "Secret":
        """x - y.  Rounds 0, bytes 0; exact."""
        return self._session._op("sub", [self, self._session.lift(other)], {})

    def __rsub__(self, other) -> "Secret":
        return self._session._op("sub", [self._session.lift(other), self], {})

    def __neg__(self) -> "Secret":
        """-x.  Rounds 0, bytes 0."""
        return self._op("neg")

    def __pos__(self) -> "Secret":
        return self

    def __mul__(self, other) -> "Secret":
        """Elementwise product (broadcast), untruncated (scale 2f for two reals).
        Secret * secret: rounds 1 (Beaver); bytes 8 per element of each operand neither
        opened before nor known as a linear form (a comparison result or a truncation is
        one, and costs nothing); an operand at 2f is truncated in the same round (8 per
        element).  Secret * public: local, rounds 0 (1 to truncate an operand at 2f first
        when the public is a real, 8 bytes per element)."""
        if _is_secret(other):
            return self._session._op("mul", [self, self._session.lift(other)], {})
        params, arrays = self._session.public(other)
        return self._session._op("mul_public", [self], params, arrays)

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Secret":
        """x / c for a public c != 0: x times 1/c given with f significant bits (at scale
        f + k, 2^k >= |c|), truncated to f at once: relative error 2^-f plus one ulp, for
        |x / c| < 2^(62 - 2f - k).  Rounds 1 (2 for an untruncated product), bytes 8 per
        element of the result per round.  x / y for a secret y: ``div`` on the default
        domain (every positive y)."""
        if _is_secret(other):
            return self.div(other)
        return self._session._op("div_public", [self], *self._session.public_reciprocal(other))

    def __rtruediv__(self, other) -> "Secret":
        """c / x for a public c: c times ``x.reciprocal()`` (local, kept at 2f)."""
        return self.reciprocal() * other

    def __matmul__(self, other) -> "Secret":
        """Matrix product of 1-D or 2-D operands, untruncated.  Secret @ secret: rounds 1,
        bytes 8 per element of each operand not yet opened (each operand is opened once,
        in its own shape, and reused by every later product: the Beaver bound); an operand
        at 2f costs one more round (its truncation, 8 bytes per element).  With a public
        operand: local, rounds 0 (1 to truncate a 2f operand first)."""
        return _matmul(self._session, self, other)

    def __rmatmul__(self, other) -> "Secret":
        return _matmul(self._session, other, self)

    # -- comparisons (secret 0/1 results, scale 0) ------------------------------------------
    def _lt(self, a, b) -> "Secret":
        s = self._session
        return s._op("lt", [s.lift(a), s.lift(b)], {})

    def __lt__(self, other) -> "Secret":
        """[x < y] as a secret 0/1 (broadcast); exact for every value in range.  Rounds 4;
        bytes 12.25 per element (8 for the masked difference, 4.125 for the comparison
        tree's two rounds, 1/8 for the bit's conversion; bits travel in 64-bit words, so n
        is counted in whole words)."""
        return self._lt(self, other)

    def __gt__(self, other) -> "Secret":
        """[x > y] = [y < x].  Rounds 4 (see ``<``)."""
        return self._lt(other, self)

    def __le__(self, other) -> "Secret":
        """[x <= y] = 1 - [y < x].  Rounds 4 (see ``<``)."""
        return 1 - self._lt(other, self)

    def __ge__(self, other) -> "Secret":
        """[x >= y] = 1 - [x < y].  Rounds 4 (see ``<``)."""
        return 1 - self._lt(self, other)

    def __eq__(self, other) -> "Secret":
        """[x == y] = 1 - [x < y] - [y < x] (the fixed-point values are equal).  Rounds 4:
        the two comparisons run concurrently; bytes twice those of ``<``."""
        return 1 - self._lt(self, other) - self._lt(other, self)

    def __ne__(self, other) -> "Secret":
        """[x != y] = [x < y] + [y < x].  Rounds 4, bytes twice those of ``<``."""
        return self._lt(self, other) + self._lt(other, self)

    # -- nonlinear -------------------------------------------------------------------------
    def relu(self) -> "Secret":
        """max(x, 0), exact.  Rounds 4 (an untruncated product is truncated in the same
        opening as its comparison); bytes 20.25 per element (``<``'s 12.25 and 8 for the
        selection fused into the bit's conversion)."""
        return self._op("relu")

    def exp(self) -> "Secret":
        """e^x, at f, for every x (integer part and fraction split, one parallel comparison,
        a polynomial): error <= 2 ulp + 2^-(f-1) e^x for x up to x_hi = floor((61 - f) ln 2)
        - 1 (30 at f = 16); 0 below -(f+1) ln 2; e^(x_hi + 1) above (saturated, never
        wrapped).  Rounds 6 at every f (also for an input at 2f); bytes 553.5 per element at
        f = 16 (most of it the one comparison against every integer of the
        domain)."""
        return self._op("exp")

    def sigmoid(self) -> "Secret":
        """1 / (1 + e^-x), at f, for every x (exactly 0 and 1 far out); error <= 3 ulp.
        Rounds 10 at f <= 16 (also for an input at 2f), 11 above; bytes 477.75 per element
        at f = 16."""
        return self._op("sigmoid")

    def log(self, lo: float | None = None, hi: float | None = None) -> "Secret":
        """Natural log, at f, for x in the public domain [lo, hi] (default [2^-f,
        2^(59-f)]); log lo below it (x <= 0 too), log hi above (saturated).  Error <= 2 ulp
        (1 + |log x|).  Rounds 8 at f <= 16, 9 at 20, 10 at 24 (+1 for an input at 2f);
        bytes 783 per element at f = 16 on the default domain (a comparison per power of 2 in it).  Bounds the format
        cannot hold are refused."""
        return self._op("log", **_domain(lo, hi))

    def reciprocal(self, lo: float | None = None, hi: float | None = None) -> "Secret":
        """1/x, at f, for x in the public domain [lo, hi] (default [2^-f, 2^(f+2)]: every
        positive value; below a quarter ulp beyond); 1/lo below (x <= 0 too), 1/hi above.
        Error <= 2 ulp (1 + 1/x).  Rounds 9 at f >= 16, 8 at 12 (+1 for an input at 2f);
        bytes 500.75 per element on the default domain, 108.75 on [1, 4] (a comparison per
        power of 2 in the domain)."""
        return self._op("reciprocal", **_domain(lo, hi))

    def rsqrt(self, lo: float | None = None, hi: float | None = None) -> "Secret":
        """x^(-1/2), at f, for x in the public domain [lo, hi] (default [4^-ceil(f/2),
        ~4^(f/2+2)]); lo^(-1/2) below (x <= 0 too), hi^(-1/2) above.  Error <= 2 ulp
        (1 + x^(-1/2)).  Rounds 12 at f <= 20, 14 at 24 (+1 for an input at 2f); bytes
        352.75 per element on the default domain at f = 16."""
        return self._op("rsqrt", **_domain(lo, hi))

    def div(self, other, lo: float | None = None, hi: float | None = None) -> "Secret":
        """x / y for a secret y in ``reciprocal``'s domain [lo, hi] (x times 1/y, kept at
        2f; x / lo or x / hi outside the domain), or a public y (see ``/``).  Error, once
        truncated: <= |x| 2^-(f-1) (1 + 1/|y|) + 1 ulp (the rounding of 1/y to f bits,
        times x).  Rounds: reciprocal's + 1 (10 at f = 16); bytes reciprocal's + 16 per
        element (516.75 on the default domain)."""
        if not _is_secret(other):
            return self / other
        return self._session._op("div", [self, other], _domain(lo, hi))

    def softmax(self, axis: int = -1) -> "Secret":
        """Softmax along ``axis`` (max-subtracted, Goldschmidt division), at f, for every
        value: error <= 2^-13 p + 4 ulp.  Rounds 16 for rows of 10 at every f (also for
        untruncated logits), bytes 316.4375 per element at f = 16."""
        axis = int(axis) % max(self.ndim, 1)
        if axis == self.ndim - 1:
            return self._op("softmax")
        order = [a for a in range(self.ndim) if a != axis] + [axis]
        back = list(np.argsort(order))
        return self.transpose(order)._op("softmax").transpose(back)

    def max(self, axis=None) -> "Secret":
        """Maximum along ``axis`` (None: over all elements), exact.  Rounds 5 for rows of
        3 to 10 values (all pairs compared at once, then one AND of fan-in 9), 6 for 11 to
        16, 4 for 2; longer rows in blocks of 8 (10 rounds for 17 to 64 values); from 2^14
        elements on, rows of 3 to 16 run as a tournament (4 rounds per level, half the
        comparisons).  Bytes per element: 63.8125 for rows of 10, 14.1875 for rows of 2."""
        x, axis = (self.flatten(), 0) if axis is None else (self, int(axis))
        return x._op("max", axis=axis)

    def argmax(self, axis=None, one_hot: bool = False) -> "Secret":
        """Index of the (first) maximum along ``axis`` (None: of the flattened value) as a
        secret integer, or with ``one_hot`` the 0/1 indicator of it.  Rounds and bytes as
        ``max``; the index is a local sum of the indicator."""
        x, axis = (self.flatten(), 0) if axis is None else (self, int(axis) % max(self.ndim, 1))
        hot = x._op("argmax", axis=axis)
        if one_hot:
            return hot
        k = x.shape[axis]
        place = np.arange(k, dtype=np.int64).reshape((k,) + (1,) * (x.ndim - axis - 1))
        return (hot * place).sum(axis)

    def conv2d(self, weight, bias=None, stride: int = 1, padding: int = 0) -> "Secret":
        """2-D convolution of an (N, C, H, W) value with (O, C, kh, kw) weights (secret or
        public) plus an optional (O,) bias, untruncated.  Rounds 1 (Beaver: the image and
        the weights are opened once each, 8 bytes per element not yet opened)."""
        s = self._session
        out = s._op("conv2d", [self, s.lift(weight)], {"stride": int(stride), "padding": int(padding)})
        if bias is None:
            return out
        b = bias if _is_secret(bias) else np.asarray(bias, dtype=np.float64)
        return out + b.reshape(1, -1, 1, 1)

    # -- reveal ----------------------------------------------------------------------------
    def reveal(self) -> np.ndarray:
        """The value as a float array, to the caller only (runs every queued op first).
        Each party sends the caller its shares; nothing is opened between the parties.
        Rounds 0 between the parties; bytes 8 per element from each party to the caller."""
        return self._session.reveal(self)


def _domain(lo, hi) -> dict:
    return {k: float(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}


def _matmul(session, a, b) -> Secret:
    """a @ b with numpy's 1-D rules; a public side makes the product local."""
    if not _is_secret(a) and not _is_secret(b):
        raise TypeError("at least one operand of a secure product is a secret")
    shape_of = lambda v: v.shape if _is_secret(v) else np.shape(v)  # noqa: E731
    ra, rb = len(shape_of(a)), len(shape_of(b))
    if not (1 <= ra <= 2 and 1 <= rb <= 2):
        raise ValueError(f"@ takes 1-D or 2-D operands, got {shape_of(a)} @ {shape_of(b)}")
    a2 = a.reshape(1, -1) if ra == 1 else a
    b2 = b.reshape(-1, 1) if rb == 1 else b
    if _is_secret(a2) and _is_secret(b2):
        out = session._op("matmul", [a2, session.lift(b2)], {})
    else:
        secret, pub = (a2, b2) if _is_secret(a2) else (b2, a2)
        params, arrays = session.public(np.asarray(pub))
        params["side"] = "right" if secret is a2 else "left"
        out = session._op("matmul_public", [secret], params, arrays)
    if ra == 1 and rb == 1:
        return out.reshape(())
    if ra == 1 or rb == 1:
        return out.reshape(-1)
    return out


def where(condition: Secret, a, b) -> Secret:
    """``a`` where the secret 0/1 ``condition`` is 1, else ``b`` (each secret or public):
    condition * (a - b) + b.  Rounds 1 when a - b is secret (its opening, 8 bytes per
    element; a condition made by ``<`` or ``>`` is a linear form and is not opened, any
    other costs 8 bytes per element more), 0 when a - b is public.  ``condition`` must be
    0/1 (what comparisons return)."""
    if not _is_secret(condition):
        raise TypeError("where's condition is a secret 0/1 (compare handles to make one)")
    diff = (a - b) if _is_secret(a) or _is_secret(b) else np.asarray(a) - np.asarray(b)
    return condition * diff + b


def concatenate(values, axis: int = 0) -> Secret:
    """Join secret (and public) values along ``axis``.  Rounds 0, bytes 0."""
    session = next((v._session for v in values if _is_secret(v)), None)
    if session is None:
        raise TypeError("concatenate needs at least one secret")
    return session.concatenate(values, axis)
