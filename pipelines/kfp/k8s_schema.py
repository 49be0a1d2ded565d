"""Validate rendered custom resources against a CRD's openAPIV3Schema (strict, like `kubectl --validate=strict`).

Kubernetes' OpenAPI flavour -> JSON Schema: ``x-kubernetes-int-or-string`` -> integer|string,
``nullable`` -> also null, ``x-kubernetes-preserve-unknown-fields`` -> extra keys allowed; every other
object with ``properties`` rejects unknown keys (structural schemas would silently prune them).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_SCHEMA_DIRS = [Path(__file__).resolve().parents[3] / "shared" / "k8s-schemas",  # ../shared beside the repo
                       Path("/etc/adrec/k8s-schemas")]  # mounted in the platform image
ISVC_CRD = "serving.kserve.io_inferenceservices.yaml"


def to_json_schema(node, strict: bool = True):
    if isinstance(node, list):
        return [to_json_schema(v, strict) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k.startswith("x-kubernetes-") or k == "nullable":
            continue
        if k in ("properties", "patternProperties", "definitions"):
            out[k] = {name: to_json_schema(s, strict) for name, s in v.items()}
        else:
            out[k] = to_json_schema(v, strict)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if (strict and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def find_crd(filename: str = ISVC_CRD, schema_dir: str | Path | None = None) -> Path:
    dirs = [Path(schema_dir)] if schema_dir else DEFAULT_SCHEMA_DIRS
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    raise FileNotFoundError(f"{filename} not found in {[str(d) for d in dirs]}")


@lru_cache(maxsize=8)
def crd_schema(path: str, version: str = "v1beta1") -> dict:
    crd = yaml.safe_load(Path(path).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = to_json_schema(v["schema"]["openAPIV3Schema"])
            # metadata is `type: object` in every CRD; check the fields we render
            schema.setdefault("properties", {})["metadata"] = {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$"},
                               "namespace": {"type": "string"},
                               "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                               "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
            return schema
    raise ValueError(f"{path} has no version {version}")


def validation_errors(obj: dict, crd_path: str | Path) -> list[str]:
    import jsonschema

    api_version = obj.get("apiVersion", "")
    schema = crd_schema(str(crd_path), api_version.rsplit("/", 1)[-1] or "v1beta1")
    v = jsonschema.Draft7Validator(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(obj))


def validate(obj: dict, crd_path: str | Path) -> None:
    errs = validation_errors(obj, crd_path)
    if errs:
        raise ValueError(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} does not match the CRD schema:\n  "
                         + "\n  ".join(errs[:20]))
