"""Correlated randomness: material specs, the seed-compressed generator, party-side sources."""
from .expand import DealerCore, expand_own
from .source import (CorrectionLink, CorrelatedSource, InProcessDealerLink, Material, SeededSource,
                     SourceStats)
from .specs import (AndSpec, BitSpec, CmpSpec, Field, ItemRef, MaskSpec, MaterialSpec, ProductSpec,
                    TruncSpec, spec_from_wire, words_for)

__all__ = [
    "DealerCore", "expand_own", "CorrectionLink", "CorrelatedSource",
    "InProcessDealerLink", "Material", "SeededSource", "SourceStats", "AndSpec", "BitSpec",
    "CmpSpec", "Field", "ItemRef", "MaskSpec", "MaterialSpec", "ProductSpec", "TruncSpec",
    "spec_from_wire", "words_for",
]
