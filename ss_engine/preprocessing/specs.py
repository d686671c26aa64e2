"""Typed descriptions of every kind of correlated randomness the protocols use.

Each spec declares
  * ``random_fields``: shares each party expands from its *own* seed (masks, XOR shares);
    the dealer learns the secret by expanding both seeds.  These cost no dealer bytes.
  * ``corrected_fields``: party 0 expands its share from its seed too; party 1 receives a
    *correction* from the dealer (secret minus party 0's share, or XOR for bit words).
  * ``dealt_fields(rank)``: values the dealer computes and sends whole to party ``rank``,
    for material no seed can compress (function-secret-sharing keys, a mask one party must
    know in the clear: ``InputMaskSpec``).  None for today's protocols, so party 0 hears
    nothing from the dealer.
  * ``compute(values, resolve)``: the dealer's pure function from the secret values of the
    random fields to the secret values of the corrected fields and the dealt values.

This is the seed compression the issue asks for: the dealer sends real data only for
corrected and dealt fields.  One generic expander (``expand.py``) serves both parties and
the dealer, so their streams cannot drift apart.  An item lives at an ``Addr`` in its
run's keystream (``plan.py`` lays runs out).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

import numpy as np

from .. import kernels
from ..config import ProtocolConfig
from . import circuits
from .bilinear import BILINEAR_OPS, apply_bilinear

__all__ = [
    "Field", "Addr", "ItemRef", "MaterialSpec", "MaskSpec", "ProductSpec", "TruncSpec", "CmpSpec",
    "AndTreeSpec", "AndSpec", "BitSpec", "InputMaskSpec", "spec_from_wire", "words_for", "relative_spec",
    "received_fields", "RELATIVE",
]

RING, WORDS = "ring", "words"


def words_for(n: int) -> int:
    """uint64 words needed to pack n bits."""
    return (int(n) + 63) // 64


@dataclass(frozen=True)
class Field:
    name: str
    shape: tuple
    kind: str  # RING (int64, additive) or WORDS (uint64, XOR)

    @property
    def nbytes(self) -> int:
        return 8 * math.prod(self.shape)


#: the nonce of an address relative to the run that holds it (``relative_spec``)
RELATIVE = -1


class Addr(NamedTuple):
    """Where an item's keystream lies: in run ``nonce``, at block ``r`` of the run's region of
    random fields and block ``c`` of its region of party 0's corrected shares
    (``plan.region_counter``).  ``nonce`` is ``RELATIVE`` in a plan: "this run"."""

    nonce: int
    r: int
    c: int

    def to_wire(self) -> list:
        return [self.nonce, self.r, self.c]


@dataclass(frozen=True)
class ItemRef:
    """An earlier item's field, used as an operand of a product (mask reuse)."""

    addr: Addr
    spec: "MaterialSpec"
    field: str

    def to_wire(self) -> dict:
        return {"addr": self.addr.to_wire(), "spec": self.spec.to_wire(), "field": self.field}


class MaterialSpec:
    kind: str = ""

    def random_fields(self) -> tuple[Field, ...]:
        return ()

    def corrected_fields(self) -> tuple[Field, ...]:
        return ()

    def dealt_fields(self, rank: int) -> tuple[Field, ...]:
        return ()

    def compute(self, values: Mapping[str, np.ndarray], resolve: Callable[[ItemRef], np.ndarray]
                ) -> dict[str, np.ndarray]:
        return {}

    def dealer_bytes(self) -> int:
        return sum(f.nbytes for r in (0, 1) for f in received_fields(self, r))

    def uncompressed_bytes(self) -> int:
        """What a dealer without seeds would send: both parties' shares of every field."""
        return 2 * sum(f.nbytes for f in self.random_fields() + self.corrected_fields()) + \
            sum(f.nbytes for r in (0, 1) for f in self.dealt_fields(r))

    def to_wire(self) -> dict:
        raise NotImplementedError


def _shape(s) -> tuple:
    shape = tuple(int(v) for v in s)
    if any(v < 0 for v in shape) or len(shape) > 6:
        raise ValueError(f"invalid shape {shape}")
    return shape


@dataclass(frozen=True)
class MaskSpec(MaterialSpec):
    """A uniform ring mask A, additively shared; no dealer bytes at all."""

    shape: tuple
    kind = "mask"

    def random_fields(self):
        return (Field("a", self.shape, RING),)

    def to_wire(self):
        return {"kind": self.kind, "shape": list(self.shape)}


@dataclass(frozen=True)
class ProductSpec(MaterialSpec):
    """Shares of op(left, right) for two earlier items: the C of a Beaver triple.

    op: "matmul" (optionally transposing either operand; batched via leading dims),
        "mul" (elementwise with numpy broadcasting),
        "conv" (im2col(left; kh, kw, stride, padding) @ right.reshape(out, -1).T).
    """

    op: str
    left: ItemRef
    right: ItemRef
    out_shape: tuple
    transpose_left: bool = False
    transpose_right: bool = False
    conv: tuple = ()  # (kh, kw, stride, padding) for op == "conv"
    kind = "product"

    def corrected_fields(self):
        return (Field("c", self.out_shape, RING),)

    def compute(self, values, resolve):
        c = apply_bilinear(self.op, resolve(self.left), resolve(self.right),
                           self.transpose_left, self.transpose_right, self.conv)
        if c.shape != self.out_shape:
            raise ValueError(f"product shape {c.shape} != declared {self.out_shape}")
        return {"c": c}

    def to_wire(self):
        return {"kind": self.kind, "op": self.op, "left": self.left.to_wire(),
                "right": self.right.to_wire(), "out_shape": list(self.out_shape),
                "tl": self.transpose_left, "tr": self.transpose_right, "conv": list(self.conv)}


@dataclass(frozen=True)
class TruncSpec(MaterialSpec):
    """Truncation material: mask r, shares of its top bit and of (r mod 2^63) >> f."""

    shape: tuple
    frac_bits: int
    kind = "trunc"

    def random_fields(self):
        return (Field("r", self.shape, RING),)

    def corrected_fields(self):
        return (Field("r_msb", self.shape, RING), Field("r_hi", self.shape, RING))

    def compute(self, values, resolve):
        r_msb, r_hi = kernels.trunc_split(values["r"], self.frac_bits)
        return {"r_msb": r_msb, "r_hi": r_hi}

    def to_wire(self):
        return {"kind": self.kind, "shape": list(self.shape), "frac_bits": self.frac_bits}


def _check_ranges(spec, **bounds) -> None:
    """ValueError unless every named field is an int within its [lo, hi] (checked before a
    spec builds its circuit, whose size grows as 2^block and 2^fan_in)."""
    for name, (lo, hi) in bounds.items():
        v = getattr(spec, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{spec.kind} spec: {name}={v!r} outside [{lo}, {hi}]")


def _round_fields(circuit: circuits.Circuit, words: int, name: str, what) -> tuple[Field, ...]:
    return tuple(Field(f"{name}{i}", (what(lv), words), WORDS) for i, lv in enumerate(circuit.rounds, 1))


def _round_products(circuit: circuits.Circuit, values) -> dict[str, np.ndarray]:
    return {f"p{i}": kernels.and_nodes(values[f"a{i}"], lv.pairs)
            for i, lv in enumerate(circuit.rounds, 1)}


@dataclass(frozen=True)
class CmpSpec(MaterialSpec):
    """Comparison material for n values in Z_2^bits, for the comparator of
    ``preprocessing.circuits`` with ``block``-bit blocks and fan-in at most ``fan_in``:
    the mask r (additive); the bits of r mod 2^bits, bit-sliced and XOR-shared (``r_bits``);
    the ANDs of every two or more bits of each block of the low bits (``r_mono``), which
    make the first level local; and for each round of the tree the masks of the bits it
    opens (``a1``, ``a2``, ...: from the seeds, no dealer bytes) and the products of masks
    its gates need (``p1``, ``p2``, ...)."""

    n: int
    bits: int
    block: int = ProtocolConfig.cmp_block_bits
    fan_in: int = ProtocolConfig.cmp_fan_in
    kind = "cmp"

    def __post_init__(self):
        _check_ranges(self, n=(0, 1 << 40), bits=(2, 64), block=(1, circuits.MAX_BLOCK_BITS),
                      fan_in=(2, circuits.MAX_FAN_IN))

    def circuit(self) -> circuits.Circuit:
        return circuits.comparator(self.bits, self.block, self.fan_in)

    def random_fields(self):
        return (Field("r", (self.n,), RING),) + _round_fields(
            self.circuit(), words_for(self.n), "a", lambda lv: lv.n_vars)

    def corrected_fields(self):
        c, w = self.circuit(), words_for(self.n)
        return (Field("r_bits", (self.bits, w), WORDS),
                Field("r_mono", (c.local.n_products, w), WORDS)) + _round_fields(
            c, w, "p", lambda lv: lv.n_products)

    def compute(self, values, resolve):
        c = self.circuit()
        r_bits = kernels.bit_slices(values["r"], self.bits)
        return {"r_bits": r_bits, "r_mono": kernels.and_nodes(r_bits, c.local.pairs),
                **_round_products(c, values)}

    def to_wire(self):
        return {"kind": self.kind, "n": self.n, "bits": self.bits, "block": self.block,
                "fan_in": self.fan_in}


@dataclass(frozen=True)
class AndTreeSpec(MaterialSpec):
    """Material for the AND of ``inputs`` XOR-shared rows of ``words`` words each, in
    rounds of multi-input gates of at most ``fan_in`` (``preprocessing.circuits.and_tree``):
    per round the masks of the rows it opens (``a1``, ...) and the products of every two or
    more masks of a gate (``p1``, ...)."""

    words: int
    inputs: int
    fan_in: int
    kind = "and_tree"

    def __post_init__(self):
        _check_ranges(self, words=(0, 1 << 34), inputs=(1, 1 << 12), fan_in=(2, circuits.MAX_FAN_IN))

    def circuit(self) -> circuits.Circuit:
        return circuits.and_tree(self.inputs, self.fan_in)

    def random_fields(self):
        return _round_fields(self.circuit(), self.words, "a", lambda lv: lv.n_vars)

    def corrected_fields(self):
        return _round_fields(self.circuit(), self.words, "p", lambda lv: lv.n_products)

    def compute(self, values, resolve):
        return _round_products(self.circuit(), values)

    def to_wire(self):
        return {"kind": self.kind, "words": self.words, "inputs": self.inputs, "fan_in": self.fan_in}


@dataclass(frozen=True)
class AndSpec(MaterialSpec):
    """Binary Beaver triples sharing one left mask: c_i = a & b_i for i < fan_out."""

    shape: tuple
    fan_out: int = 1
    kind = "and"

    def random_fields(self):
        return (Field("a", self.shape, WORDS),) + tuple(
            Field(f"b{i}", self.shape, WORDS) for i in range(self.fan_out))

    def corrected_fields(self):
        return tuple(Field(f"c{i}", self.shape, WORDS) for i in range(self.fan_out))

    def compute(self, values, resolve):
        a = values["a"]
        return {f"c{i}": a & values[f"b{i}"] for i in range(self.fan_out)}

    def to_wire(self):
        return {"kind": self.kind, "shape": list(self.shape), "fan_out": self.fan_out}


@dataclass(frozen=True)
class BitSpec(MaterialSpec):
    """A random bit per element, shared both ways: packed XOR words "x" and additive "a"."""

    n: int
    kind = "bit"

    def random_fields(self):
        return (Field("x", (words_for(self.n),), WORDS),)

    def corrected_fields(self):
        return (Field("a", (self.n,), RING),)

    def compute(self, values, resolve):
        return {"a": kernels.from_bit_slices(values["x"][None, :], self.n)}

    def to_wire(self):
        return {"kind": self.kind, "n": self.n}


@dataclass(frozen=True)
class InputMaskSpec(MaterialSpec):
    """A mask r, additively shared, that party ``owner`` also receives in the clear: with it
    the owner inputs a private x into the shared domain by sending x - r (one one-way
    message; SPDZ's input preprocessing).  The dealer sends r to the owner: material for
    party 0 whenever ``owner`` is 0."""

    shape: tuple
    owner: int
    kind = "input_mask"

    def random_fields(self):
        return (Field("r", self.shape, RING),)

    def dealt_fields(self, rank):
        return (Field("r_clear", self.shape, RING),) if rank == self.owner else ()

    def compute(self, values, resolve):
        return {"r_clear": values["r"]}

    def to_wire(self):
        return {"kind": self.kind, "shape": list(self.shape), "owner": self.owner}


def received_fields(spec: MaterialSpec, rank: int) -> tuple[Field, ...]:
    """What party ``rank`` receives from the dealer for ``spec``: party 1 the corrections
    of the corrected fields, either party the fields dealt to it."""
    return (spec.corrected_fields() if rank == 1 else ()) + spec.dealt_fields(rank)


def relative_spec(spec: MaterialSpec, nonce: int) -> MaterialSpec:
    """``spec`` with every reference to an item of run ``nonce`` made relative (its nonce
    ``RELATIVE``): the form a plan keeps, the same whichever run recorded it.  References to
    earlier runs' items stay absolute."""
    changes = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if isinstance(v, ItemRef) and v.addr.nonce == nonce:
            changes[f.name] = ItemRef(Addr(RELATIVE, v.addr.r, v.addr.c),
                                      relative_spec(v.spec, nonce), v.field)
    return dataclasses.replace(spec, **changes) if changes else spec


def _addr_from_wire(v) -> Addr:
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(isinstance(x, int) for x in v):
        raise ValueError("an item address is [nonce, r, c]")
    return Addr(int(v[0]), int(v[1]), int(v[2]))


def _ref_from_wire(d) -> ItemRef:
    return ItemRef(_addr_from_wire(d["addr"]), spec_from_wire(d["spec"]), str(d["field"]))


def spec_from_wire(d) -> MaterialSpec:
    """Rebuild a spec from its msgpack form; raises ValueError on anything malformed."""
    if not isinstance(d, Mapping) or "kind" not in d:
        raise ValueError("material spec must be a mapping with a 'kind'")
    kind = d["kind"]
    try:
        if kind == "mask":
            return MaskSpec(_shape(d["shape"]))
        if kind == "product":
            op = str(d["op"])
            if op not in BILINEAR_OPS:
                raise ValueError(f"unknown product op {op!r}")
            return ProductSpec(op, _ref_from_wire(d["left"]), _ref_from_wire(d["right"]),
                               _shape(d["out_shape"]), bool(d["tl"]), bool(d["tr"]),
                               tuple(int(v) for v in d["conv"]))
        if kind == "trunc":
            return TruncSpec(_shape(d["shape"]), int(d["frac_bits"]))
        if kind == "cmp":
            return CmpSpec(int(d["n"]), int(d["bits"]), int(d["block"]), int(d["fan_in"]))
        if kind == "and_tree":
            return AndTreeSpec(int(d["words"]), int(d["inputs"]), int(d["fan_in"]))
        if kind == "and":
            return AndSpec(_shape(d["shape"]), int(d["fan_out"]))
        if kind == "bit":
            return BitSpec(int(d["n"]))
        if kind == "input_mask":
            owner = int(d["owner"])
            if owner not in (0, 1):
                raise ValueError("an input mask's owner is party 0 or 1")
            return InputMaskSpec(_shape(d["shape"]), owner)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {kind!r} spec: {exc}") from None
    raise ValueError(f"unknown material kind {kind!r}")
