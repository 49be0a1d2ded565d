"""Experiment definitions, loaded from YAML (a ConfigMap in the cluster).

    layers:                       # experiments in one layer are mutually exclusive;
      - id: ranking               # experiments in different layers overlap independently
        salt: layer-ranking-1
        experiments:
          - id: diversity-2026-11
            salt: div-1            # changing it reshuffles every user: do it only for a new experiment
            traffic: 0.5           # share of the layer's buckets this experiment owns
            variants:
              - {name: control, weight: 50}
              - {name: one-per-shop, weight: 50, params: {max_per_shop: 1}}

Variant params a variant may change: `collection` (Milvus alias/collection, i.e. model
version: listing seeds are searched with their vector from that collection; image queries, embedded
by the deployed model, keep the serving alias), `max_per_shop`, `overfetch`, `k`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")]


class VariantParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    max_per_shop: int | None = Field(default=None, ge=1, le=100)
    overfetch: int | None = Field(default=None, ge=1, le=20)
    k: int | None = Field(default=None, ge=1, le=100)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    weight: float = Field(gt=0)
    params: VariantParams = Field(default_factory=VariantParams)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Name
    salt: str = Field(min_length=1)
    traffic: float = Field(default=1.0, gt=0, le=1)
    unit: str = Field(default="user", pattern="^(user|session)$")
    variants: list[Variant] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.id}: duplicate variant names")
        return self


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Name
    salt: str = Field(min_length=1)
    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fits(self) -> Layer:
        total = sum(e.traffic for e in self.experiments)
        if total > 1.0 + 1e-9:
            raise ValueError(f"layer {self.id}: experiments take {total:.2f} of its traffic (max 1.0)")
        return self


class ExperimentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[Layer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> ExperimentsConfig:
        ids = [e.id for e in self.all_experiments()]
        if len(set(ids)) != len(ids):
            raise ValueError("experiment ids must be unique across layers")
        layer_ids = [layer.id for layer in self.layers]
        if len(set(layer_ids)) != len(layer_ids):
            raise ValueError("layer ids must be unique")
        # one salt, one hash: two experiments (or a layer and an experiment) sharing a salt would
        # bucket every unit alike, e.g. a layer's first 50% would all land in the first 50% of variants
        owners: dict[str, str] = {}
        for layer in self.layers:
            for kind, owner, salt in [("layer", layer.id, layer.salt),
                                      *(("experiment", e.id, e.salt) for e in layer.experiments)]:
                if salt in owners:
                    raise ValueError(f"{kind} {owner} reuses the salt {salt!r} of {owners[salt]}: "
                                     "every layer and experiment needs its own salt")
                owners[salt] = f"{kind} {owner}"
        return self

    def all_experiments(self) -> list[Experiment]:
        """Every experiment, layer by layer, in file order."""
        return [e for layer in self.layers for e in layer.experiments]

    def experiment(self, exp_id: str) -> Experiment | None:
        return next((e for e in self.all_experiments() if e.id == exp_id), None)


class ExperimentConfigError(ValueError):
    pass


def load_experiments(path: str | Path | None) -> ExperimentsConfig:
    if not path:
        return ExperimentsConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return ExperimentsConfig.model_validate(data)
    except FileNotFoundError as exc:
        raise ExperimentConfigError(f"experiments file not found: {path}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ExperimentConfigError(f"invalid experiments file {path}: {exc}") from exc
