"""The Helm chart: lint, render every profile, validate every object offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helpers.k8s_schemas import crd_schema

REPO = Path(__file__).resolve().parents[2]
HELM = str(REPO / ".cache" / "bin" / "helm")
CHART = REPO / "helm" / "adrec"
KUBE = "1.33.0"
PROFILES = {"default": [], "dev": ["-f", str(CHART / "values-dev.yaml")],
            "gpu": ["-f", str(CHART / "values-gpu.yaml")]}
CRDS_NOT_SHIPPED = {"keda.sh/v1alpha1", "monitoring.coreos.com/v1"}  # KEDA, Prometheus operator


def render(*args: str) -> list[dict]:
    out = subprocess.run([HELM, "template", "rel", str(CHART), "-n", "adrec", "--kube-version", KUBE, *args],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            specs.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "InferenceService":
            specs.append((d["metadata"]["name"], d["spec"]["predictor"]))
    return specs


@pytest.mark.parametrize("profile", PROFILES)
def test_lint_strict(profile: str) -> None:
    res = subprocess.run([HELM, "lint", "--strict", str(CHART), "--kube-version", KUBE, *PROFILES[profile]],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_object_validates(profile: str) -> None:
    docs = render(*PROFILES[profile])
    assert {"Deployment", "Service", "ConfigMap", "InferenceService", "ServiceAccount", "Job"} <= {d["kind"] for d in docs}
    isvc = crd_schema()
    for d in docs:
        if d["apiVersion"] == "serving.kserve.io/v1beta1":
            jsonschema.validate(d, isvc)
        else:
            kubernetes_validate.validate(d, KUBE, strict=True)


def test_optional_crs_render_when_enabled() -> None:
    docs = render("--set", "ingest.keda.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true")
    (scaled,) = by_kind(docs, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["type"] == "kafka"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "rel-adrec-ingest"
    (ingest,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-adrec-ingest"]
    assert "replicas" not in ingest["spec"]  # KEDA owns the replica count
    assert by_kind(docs, "ServiceMonitor")
    for d in docs:
        if d["apiVersion"] not in CRDS_NOT_SHIPPED | {"serving.kserve.io/v1beta1"}:
            kubernetes_validate.validate(d, KUBE, strict=True)


def embedder(docs: list[dict]) -> dict:
    (isvc,) = by_kind(docs, "InferenceService")
    return isvc["spec"]["predictor"]


def test_gpu_profile_puts_the_embedder_on_the_gpu_pool_and_default_does_not() -> None:
    gpu = embedder(render(*PROFILES["gpu"]))
    assert gpu["nodeSelector"]["adrec.io/pool"] == "gpu"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    (c,) = gpu["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith("-gpu")
    assert {"name": "ADREC_EMBEDDER__PROVIDER", "value": "cuda"} in c["env"]
    cpu = embedder(render())
    (c,) = cpu["containers"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and c["image"].endswith("-cpu")


def test_canary_percent_is_passed_through_in_serverless_mode() -> None:
    assert "canaryTrafficPercent" not in embedder(render())
    docs = render("--set", "embedder.deploymentMode=Serverless", "--set", "embedder.canaryTrafficPercent=10")
    (isvc,) = by_kind(docs, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    (c,) = isvc["spec"]["predictor"]["containers"]
    assert [p["name"] for p in c["ports"]] == ["http1"]  # Knative allows one container port
    jsonschema.validate(isvc, crd_schema())


def test_default_mode_is_raw_deployment_with_the_hpa() -> None:
    (isvc,) = by_kind(render(), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"


def test_canary_percent_in_raw_deployment_mode_fails_rendering() -> None:
    res = subprocess.run([HELM, "template", "rel", str(CHART), "--kube-version", KUBE,
                          "--set", "embedder.canaryTrafficPercent=10"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "embedder.canaryTrafficPercent needs embedder.deploymentMode=Serverless" in res.stderr, res.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_embedder_serves_under_the_model_name_the_clients_call(profile: str) -> None:
    docs = render(*PROFILES[profile], "--set", "embedder.modelName=other-embedder")
    (c,) = embedder(docs)["containers"]
    assert "--model_name=other-embedder" in c["args"]
    for d in by_kind(docs, "Deployment"):
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["ADREC_EMBEDDER_CLIENT__MODEL_NAME"] == "other-embedder"


@pytest.mark.parametrize("profile", PROFILES)
def test_embedder_liveness_waits_for_a_startup_probe(profile: str) -> None:
    (c,) = embedder(render(*PROFILES[profile]))["containers"]
    probe = c["startupProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 180  # model load + warm-up
    assert "livenessProbe" in c


def test_embedder_onnx_threads_match_the_cpu_limit() -> None:
    (c,) = embedder(render())["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ADREC_EMBEDDER__INTRA_OP_THREADS"] == "4" == str(c["resources"]["limits"]["cpu"])
    (c,) = embedder(render("--set", "embedder.intraOpThreads=2"))["containers"]
    assert {"name": "ADREC_EMBEDDER__INTRA_OP_THREADS", "value": "2"} in c["env"]


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_meet_the_restricted_pod_security_profile(profile: str) -> None:
    for name, spec in pod_specs(render(*PROFILES[profile])):
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, name
            assert csc["capabilities"]["drop"] == ["ALL"], name
            assert "resources" in c and c["resources"]["limits"], name


def test_services_get_the_shared_environment_and_recommended_labels() -> None:
    docs = render("--set", "kafka.bootstrapServers=k1:9092\\,k2:9092", "--set", "redis.existingSecret=redis-auth")
    for d in by_kind(docs, "Deployment"):
        labels = d["metadata"]["labels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                "app.kubernetes.io/version", "app.kubernetes.io/managed-by"} <= set(labels)
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["ADREC_KAFKA__BOOTSTRAP_SERVERS"]["value"] == "k1:9092,k2:9092"
        assert env["ADREC_FEAST__REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth",
                                                                                   "key": "password"}
    (hook,) = by_kind(docs, "Job")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


@pytest.mark.parametrize("profile", PROFILES)
def test_hook_job_uses_nothing_created_after_the_hooks(profile: str) -> None:
    docs = render(*PROFILES[profile])
    (hook,) = by_kind(docs, "Job")
    assert "helm.sh/hook" in hook["metadata"]["annotations"]
    later = {(d["kind"], d["metadata"]["name"]) for d in docs
             if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})}
    spec = hook["spec"]["template"]["spec"]
    assert ("ServiceAccount", spec.get("serviceAccountName", "default")) not in later
    assert spec["automountServiceAccountToken"] is False  # it talks to Kafka, not the API server
    for v in spec.get("volumes", []):
        assert ("ConfigMap", v.get("configMap", {}).get("name")) not in later


@pytest.mark.parametrize("hpa, replicas", [("true", None), ("false", 3)])
def test_recommender_replicas_are_left_to_the_hpa_when_it_is_on(hpa: str, replicas: int | None) -> None:
    docs = render("--set", f"recommender.autoscaling.enabled={hpa}", "--set", "recommender.replicas=3")
    (rec,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-adrec-recommender"]
    assert rec["spec"].get("replicas") == replicas
    assert len(by_kind(docs, "HorizontalPodAutoscaler")) == (hpa == "true")


def test_every_service_monitor_endpoint_matches_a_service_port() -> None:
    docs = render("--set", "monitoring.serviceMonitor.enabled=true")
    services = by_kind(docs, "Service")
    (sm,) = by_kind(docs, "ServiceMonitor")
    selector = sm["spec"]["selector"]["matchLabels"]
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    for ep in sm["spec"]["endpoints"]:
        assert any(p["name"] == ep["port"] for s in selected for p in s["spec"]["ports"]), ep
    scraped = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected
               if {p["name"] for p in s["spec"]["ports"]} & {ep["port"] for ep in sm["spec"]["endpoints"]}}
    assert {"recommender", "ingest", "abmetrics"} <= scraped
    (ingest,) = [s for s in services if s["metadata"]["labels"]["app.kubernetes.io/component"] == "ingest"]
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-adrec-ingest"]
    assert ingest["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert ingest["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


@pytest.mark.parametrize("profile, expected", [("default", "false"), ("dev", "true")])
def test_demo_page_is_off_by_default_and_on_in_dev(profile: str, expected: str) -> None:
    (rec,) = [d for d in by_kind(render(*PROFILES[profile]), "Deployment") if d["metadata"]["name"].endswith("recommender")]
    env = {e["name"]: e.get("value") for e in rec["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ADREC_RECOMMEND__DEMO_PAGE"] == expected


@pytest.mark.parametrize("values, fragment", [
    ({"recommender": {"demoPage": "yes"}}, "demoPage"),
    ({"recommender": {"replicas": "two"}}, "replicas"),
    ({"embedder": {"gpu": "yes"}}, "gpu"),
    ({"kafka": {"bootstrapServers": "no-port"}}, "bootstrapServers"),
    ({"milvus": {"dim": 1}}, "dim"),
    ({"recommender": {"replica": 3}}, "replica"),  # a typo is not silently ignored
    ({"embedder": {"gpuResources": {"accelerator": "nvidia-tesla-t4"}}}, "accelerator"),  # no template used it
    ({"embedder": {"deploymentMode": "Knative"}}, "deploymentMode"),
    ({"embedder": {"intraOpThreads": -1}}, "intraOpThreads"),
])
def test_wrong_values_are_rejected_by_the_schema(tmp_path: Path, values: dict, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(json.dumps(values))
    res = subprocess.run([HELM, "template", "rel", str(CHART), "--kube-version", KUBE, "-f", str(f)],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr and fragment in res.stderr, res.stderr


def test_every_image_the_chart_uses_has_a_dockerfile_target() -> None:
    import re

    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (REPO / "Dockerfile").read_text(), re.M))
    embedder_targets = set(re.findall(r"^FROM \S+ AS (\S+)$",
                                      (REPO / "services" / "embedder" / "Dockerfile").read_text(), re.M))
    images = {c["image"] for _, spec in pod_specs(render(*PROFILES["default"])) for c in spec["containers"]}
    images |= {c["image"] for _, spec in pod_specs(render(*PROFILES["gpu"])) for c in spec["containers"]}
    for image in images:
        name, tag = image.rsplit("/", 1)[1].split(":")
        if name == "embedder":
            assert tag.rsplit("-", 1)[1] in embedder_targets, image
        else:
            assert name in targets, image
    for module in ("recommender", "ingest", "abmetrics"):
        assert f'"services.{module}"' in (REPO / "Dockerfile").read_text()
