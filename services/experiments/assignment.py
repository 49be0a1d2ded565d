"""Deterministic, sticky assignment: salted SHA-256 of the unit id into 10,000 buckets.

Two hashes per unit: the layer's salt picks which experiment of the layer (if any) the unit
is in (experiments own consecutive bucket ranges in config order), the experiment's salt
picks the variant (cumulative weights over the bucket space). No state is stored: the same
unit gets the same variant on every request, replica and restart.

Changing weights moves only the units whose variant bucket falls between the old and the new
boundaries (e.g. 50/50 -> 60/40 moves the 10% of units in buckets 5000-5999 from B to A);
changing `traffic` moves units in or out at the end of the experiment's range; changing a
salt reshuffles everyone (use a new salt only for a new experiment).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from services.common.events import Assignment

from .config import ExperimentsConfig, VariantParams

BUCKETS = 10_000


def bucket(salt: str, unit_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Assigned:
    assignments: list[Assignment] = field(default_factory=list)
    params: VariantParams = field(default_factory=VariantParams)

    def label(self) -> str:
        return ",".join(f"{a.experiment_id}={a.variant}" for a in self.assignments) or "none"


class Assigner:
    def __init__(self, config: ExperimentsConfig) -> None:
        self.config = config

    def assign(self, unit_id: str) -> Assigned:
        assignments: list[Assignment] = []
        merged: dict = {}
        for layer in self.config.layers:
            b = bucket(layer.salt, unit_id)
            start = 0
            for exp in layer.experiments:
                end = start + round(exp.traffic * BUCKETS)
                if start <= b < end:
                    variant = self._variant(exp, unit_id)
                    assignments.append(Assignment(experiment_id=exp.id, variant=variant.name))
                    merged.update(variant.params.model_dump(exclude_none=True))
                    break
                start = end
        return Assigned(assignments, VariantParams(**merged))

    @staticmethod
    def _variant(exp, unit_id: str):
        b = bucket(exp.salt, unit_id)
        total = sum(v.weight for v in exp.variants)
        edge = 0.0
        for v in exp.variants:
            edge += v.weight / total * BUCKETS
            if b < edge:
                return v
        return exp.variants[-1]
