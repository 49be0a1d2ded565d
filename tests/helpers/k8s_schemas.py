"""Offline schema checks for Kubernetes objects: KServe CRDs from ../shared/k8s-schemas."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("ADREC_K8S_SCHEMAS", REPO.parent / "shared" / "k8s-schemas"))


def to_json_schema(node):
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema: int-or-string, nullable."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_schema(filename: str = "serving.kserve.io_inferenceservices.yaml", version: str = "v1beta1") -> dict:
    path = SCHEMAS / filename
    if not path.is_file():
        raise FileNotFoundError(f"CRD schema not found: {path}")
    crd = yaml.safe_load(path.read_text())
    v = next(x for x in crd["spec"]["versions"] if x["name"] == version)
    return to_json_schema(v["schema"]["openAPIV3Schema"])
