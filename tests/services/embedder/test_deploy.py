"""Deployment artefacts: InferenceService manifests against KServe's CRD schema, the Dockerfile,
and the local supervisor's spec."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.k8s_schemas import crd_schema

from .conftest import REPO

MANIFESTS = sorted((REPO / "k8s" / "embedder").glob("*.yaml"))


@pytest.fixture(scope="module")
def isvc_schema() -> dict:
    return crd_schema()


def test_both_variants_exist():
    names = {p.name for p in MANIFESTS}
    assert {"inferenceservice-cpu.yaml", "inferenceservice-gpu.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_crd(path, isvc_schema):
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, isvc_schema)
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    pred = doc["spec"]["predictor"]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container" and "--model_dir=/mnt/models" in c["args"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["STORAGE_URI"].startswith(("gs://", "s3://", "pvc://"))  # storage-initializer -> /mnt/models
    assert {p["containerPort"] for p in c["ports"]} == {8080, 8081}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # Pod Security "restricted" (k8s/namespace.yaml enforces it)
    assert pred["securityContext"]["runAsNonRoot"] and pred["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"] and not c["securityContext"]["allowPrivilegeEscalation"]
    if "gpu" in path.name:
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and env["ADREC_EMBEDDER__PROVIDER"] == "cuda"
    else:
        assert "nvidia.com/gpu" not in c["resources"]["limits"] and env["ADREC_EMBEDDER__PROVIDER"] == "cpu"
    # every ADREC_ variable names a real setting
    from services.embedder.settings import EmbedderConfig

    for name in env:
        if name.startswith("ADREC_EMBEDDER__"):
            assert name.removeprefix("ADREC_EMBEDDER__").lower() in EmbedderConfig.model_fields, name


def test_schema_catches_mistakes(isvc_schema):
    doc = yaml.safe_load(MANIFESTS[0].read_text())
    bad = copy.deepcopy(doc)
    bad["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, isvc_schema)


def test_dockerfile_copies_what_the_service_imports():
    text = (REPO / "services" / "embedder" / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS cpu$", text, re.M) and re.search(r"^FROM .* AS gpu$", text, re.M)
    assert "pipelines/vision/preprocessing.py" in text and "services/embedder/*.py" in text
    assert "USER 10001" in text and "torch" not in text.replace("no torch", "")
    for module in ("settings.py", "metrics.py", "logging.py"):
        assert f"services/common/{module}" in text
    # the server must not need anything else from the repo (nor torch) at import time
    code = ("import sys, services.embedder.model, services.embedder.server, services.embedder.__main__;"
            "mods = {m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules if m.startswith(('services.', 'pipelines.')) and m.count('.') >= 1};"
            "print(sorted(mods)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    mods, torch_loaded = out.stdout.splitlines()
    assert set(eval(mods)) <= {"services.common", "services.embedder", "pipelines.vision"} and torch_loaded == "False"


def test_supervisor_spec(monkeypatch, model_dir):
    monkeypatch.setenv("ADREC_EMBEDDER__MODEL_DIR", str(model_dir))
    monkeypatch.setenv("ADREC_LOCAL_EMBEDDER_PORT", "18999")
    from services.localstack import registry

    spec = registry._embedder()
    assert any(s.name == "embedder" for s in registry.SERVICES)
    argv = spec.argv({})
    assert argv[1:3] == ["-m", "services.embedder"] and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert spec.port == 18999 and spec.health_path == "/v2/health/ready"
    assert spec.env["ADREC_EMBEDDER__MODEL_DIR"] == str(model_dir)


def test_missing_model_exits_with_advice(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ADREC_EMBEDDER__MODEL_DIR": str(tmp_path / "nothing"),
           "ADREC_LOG_JSON": "false"}
    res = subprocess.run([sys.executable, "-m", "services.embedder", "--http_port", "0"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "no model_card.json" in res.stderr and "make train-demo" in res.stderr
