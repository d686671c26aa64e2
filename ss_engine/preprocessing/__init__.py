"""Correlated randomness: material specs, run layouts and plans, the seed-compressed
generator, party-side sources and the local runtime's dealer."""
from .expand import DealerCore, expand_own, material_stream
from .local_dealer import LocalDealer, LocalDealerLink
from .plan import MaterialPlan, PlanDeviation
from .source import CorrelatedSource, DealerLink, Material, SeededSource, SourceStats
from .specs import (Addr, AndSpec, BitSpec, CmpSpec, Field, InputMaskSpec, ItemRef, MaskSpec,
                    MaterialSpec, ProductSpec, TruncSpec, spec_from_wire, words_for)

__all__ = [
    "DealerCore", "expand_own", "material_stream", "LocalDealer", "LocalDealerLink",
    "MaterialPlan", "PlanDeviation", "CorrelatedSource", "DealerLink", "Material",
    "SeededSource", "SourceStats", "Addr", "AndSpec", "BitSpec", "CmpSpec", "Field",
    "InputMaskSpec", "ItemRef", "MaskSpec", "MaterialSpec", "ProductSpec", "TruncSpec",
    "spec_from_wire", "words_for",
]
