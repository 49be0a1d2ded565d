"""Deploy step: the rendered InferenceService is valid against the KServe CRD schema; create/patch, wait for
Ready and rollback are checked against a recording CustomObjectsApi with the exact expected calls."""

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from pipelines.kfp import deploy, k8s_schema
from pipelines.kfp.deploy import (GROUP, PLURAL, VERSION, DeployError, Deployer, apply_merge_patch, load_template,
                                  merge_patch_diff, render, run_deploy)

SCHEMA_DIR = Path(__file__).resolve().parents[4] / "shared" / "k8s-schemas"
if not (SCHEMA_DIR / k8s_schema.ISVC_CRD).is_file():
    SCHEMA_DIR = Path("/work/shared/k8s-schemas")
CRD = SCHEMA_DIR / k8s_schema.ISVC_CRD
pytestmark = pytest.mark.skipif(not CRD.is_file(), reason="KServe CRD schemas (../shared/k8s-schemas) not present")

URI = "gs://adrec-models/vision/adrec-visual-embedder/0.1.0-20261125120000"
VER = "0.1.0-20261125120000"
NS, NAME = "adrec", "adrec-embedder"


def rendered(variant="cpu", **kw):
    return render(load_template(variant), model_uri=URI, model_version=VER, canary_traffic_percent=kw.pop("canary", 10),
                  **kw)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_render_is_valid_against_crd(variant):
    obj = rendered(variant, name=NAME if variant == "cpu" else None, namespace=NS)
    assert k8s_schema.validation_errors(obj, CRD) == []
    pred = obj["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    env = {e["name"]: e["value"] for e in pred["containers"][0]["env"]}
    assert env["STORAGE_URI"] == URI and env["ADREC_EMBEDDER__MODEL_VERSION"] == VER
    assert [e["name"] for e in pred["containers"][0]["env"]].count("STORAGE_URI") == 1
    assert obj["metadata"]["annotations"]["adrec/model-uri"] == URI
    assert obj["metadata"]["labels"]["adrec/model-version"] == VER
    assert load_template(variant)["spec"]["predictor"].get("canaryTrafficPercent") is None  # template untouched


def test_full_rollout_drops_canary_and_mode_override():
    obj = rendered(canary=100, deployment_mode="Serverless")
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert obj["metadata"]["annotations"][deploy.MODE_ANNOTATION] == "Serverless"
    assert k8s_schema.validation_errors(obj, CRD) == []


@pytest.mark.parametrize("canary, mode, share", [(10, "Serverless", 10), (100, "Serverless", 100),
                                                  (10, "RawDeployment", 100), (None, "Serverless", 100)])
def test_new_model_traffic_share(canary, mode, share):
    """What the alias switch waits for: RawDeployment ignores a canary; Serverless splits the traffic."""
    assert deploy.new_model_traffic_percent(rendered(canary=canary, deployment_mode=mode)) == share


def test_schema_catches_mistakes():
    obj = rendered()
    bad = copy.deepcopy(obj)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert any("canaryTrafficPercent" in e for e in k8s_schema.validation_errors(bad, CRD))
    bad = copy.deepcopy(obj)
    bad["spec"]["predictor"]["canaryTraficPercent"] = 10  # typo: unknown field
    assert any("canaryTraficPercent" in e for e in k8s_schema.validation_errors(bad, CRD))
    bad = copy.deepcopy(obj)
    bad["spec"]["predictor"]["containers"][0]["resources"]["limits"]["cpu"] = 4  # int-or-string: fine
    assert k8s_schema.validation_errors(bad, CRD) == []
    bad["metadata"]["name"] = "Bad_Name"
    assert any("metadata/name" in e for e in k8s_schema.validation_errors(bad, CRD))
    with pytest.raises(ValueError):
        render(load_template("cpu"), model_uri=URI, model_version=VER, canary_traffic_percent=120)


class RecordingApi:
    """CustomObjectsApi stand-in: records every call; ``get`` answers from a script of states."""

    def __init__(self, states):
        self.states = list(states)  # each: None (404) or an object dict
        self.calls = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural, name))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(state)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural, body["metadata"]["name"],
                           body["spec"]["predictor"].get("canaryTrafficPercent")))

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("patch", group, version, namespace, plural, name, copy.deepcopy(body)))

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete", group, version, namespace, plural, name))


def with_status(obj, ready: str | None, generation=1, observed=1, reason=None):
    o = copy.deepcopy(obj)
    o["metadata"]["generation"] = generation
    st = {"observedGeneration": observed, "conditions": []}
    if ready is not None:
        st["conditions"].append({"type": "Ready", "status": ready, **({"reason": reason} if reason else {})})
    o["status"] = st
    return o


G = ("get", GROUP, VERSION, NS, PLURAL, NAME)


def deployer(api):
    clock = iter(range(0, 10_000, 5))
    return Deployer(api, timeout_s=30, poll_s=5, sleep=lambda s: None, clock=lambda: next(clock))


def test_create_when_absent_then_ready():
    obj = rendered(name=NAME, namespace=NS)
    api = RecordingApi([None, with_status(obj, None), with_status(obj, "Unknown"), with_status(obj, "True")])
    res = deployer(api).deploy(obj)
    assert res.action == "created" and res.ready and not res.rolled_back
    assert api.calls == [G, ("create", GROUP, VERSION, NS, PLURAL, NAME, 10), G, G, G]


def test_patch_existing_new_revision_ready():
    old = render(load_template("cpu"), model_uri="gs://old", model_version="0.0.9", canary_traffic_percent=100)
    new = rendered(name=NAME, namespace=NS)
    api = RecordingApi([with_status(old, "True"),
                        with_status(new, "True", generation=2, observed=1),  # not observed yet: keep waiting
                        with_status(new, "True", generation=2, observed=2)])
    res = deployer(api).deploy(new)
    assert res.action == "patched" and res.ready and res.previous_model_uri == "gs://old"
    assert [c[0] for c in api.calls] == ["get", "patch", "get", "get"]
    patch = api.calls[1][6]
    assert apply_merge_patch(old["spec"], patch["spec"]) == new["spec"]
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patch["metadata"]["annotations"]["adrec/model-uri"] == URI


def test_full_rollout_removes_a_previous_canary_split():
    old = rendered(name=NAME, namespace=NS)  # 10 % canary
    new = render(load_template("cpu"), model_uri="gs://new", model_version="0.2.0", canary_traffic_percent=100)
    api = RecordingApi([with_status(old, "True"), with_status(new, "True")])
    deployer(api).deploy(new)
    patch = api.calls[1][6]
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] is None  # merge patch: null deletes
    assert apply_merge_patch(old["spec"], patch["spec"]) == new["spec"]


def test_failed_revision_rolls_back_to_previous_spec():
    old = render(load_template("cpu"), model_uri="gs://old", model_version="0.0.9", canary_traffic_percent=100)
    new = rendered(name=NAME, namespace=NS)
    failed = with_status(new, "False", generation=2, observed=2, reason="RevisionFailed")
    api = RecordingApi([with_status(old, "True"), failed, failed])
    with pytest.raises(DeployError, match="rolled back to the previous spec"):
        deployer(api).deploy(new)
    assert [c[0] for c in api.calls] == ["get", "patch", "get", "get", "patch"]
    rollback = api.calls[4][6]
    assert rollback["spec"]["predictor"]["canaryTrafficPercent"] is None
    assert apply_merge_patch(new["spec"], rollback["spec"]) == old["spec"]  # exactly the previous spec again
    assert rollback["metadata"]["annotations"]["adrec/model-uri"] == "gs://old"
    assert rollback["metadata"]["labels"]["adrec/model-version"] == "0.0.9"


def test_merge_patch_diff_roundtrip():
    a = {"x": 1, "y": {"z": [1, 2], "w": "keep"}, "gone": True}
    b = {"x": 2, "y": {"z": [3], "w": "keep", "new": {"k": 0}}}
    d = merge_patch_diff(a, b)
    assert d == {"gone": None, "x": 2, "y": {"z": [3], "new": {"k": 0}}}
    assert apply_merge_patch(a, d) == b


class RecordingApiClient:
    """The real kubernetes CustomObjectsApi on top of this: records the HTTP calls it would make."""

    def __init__(self, responses):
        from kubernetes.client import ApiClient

        self._real = ApiClient()
        self.responses = list(responses)
        self.requests = []

    def __getattr__(self, item):
        return getattr(self._real, item)

    def call_api(self, resource_path, method, path_params=None, query_params=None, header_params=None, body=None,
                 **kw):
        path = resource_path
        for k, v in (path_params or {}).items():
            path = path.replace("{" + k + "}", str(v))
        self.requests.append((method, path, (header_params or {}).get("Content-Type"), copy.deepcopy(body)))
        r = self.responses.pop(0)
        if isinstance(r, Exception):
            raise r
        return r


def test_against_the_kubernetes_client_http_calls():
    from kubernetes.client import CustomObjectsApi

    old = render(load_template("cpu"), model_uri="gs://old", model_version="0.0.9", canary_traffic_percent=100)
    new = rendered(name=NAME, namespace=NS)
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    client = RecordingApiClient([with_status(old, "True"), {}, with_status(new, "True", generation=2, observed=2)])
    Deployer(CustomObjectsApi(client), timeout_s=10, sleep=lambda s: None).deploy(new)
    assert [(m, p, ct) for m, p, ct, _ in client.requests] == [
        ("GET", f"{base}/{NAME}", None),
        ("PATCH", f"{base}/{NAME}", "application/merge-patch+json"),
        ("GET", f"{base}/{NAME}", None)]
    assert apply_merge_patch(old["spec"], client.requests[1][3]["spec"]) == new["spec"]

    client = RecordingApiClient([ApiException(status=404), {}, with_status(new, "False", reason="RevisionFailed"), {}])
    with pytest.raises(DeployError):
        Deployer(CustomObjectsApi(client), timeout_s=10, sleep=lambda s: None).deploy(new)
    assert [(m, p) for m, p, _, _ in client.requests] == [
        ("GET", f"{base}/{NAME}"), ("POST", base), ("GET", f"{base}/{NAME}"), ("DELETE", f"{base}/{NAME}")]
    assert client.requests[1][3] == new


def test_timeout_on_new_object_deletes_it():
    obj = rendered(name=NAME, namespace=NS)
    api = RecordingApi([None, with_status(obj, "Unknown")])
    with pytest.raises(DeployError, match="timeout.*deleted the new object"):
        deployer(api).deploy(obj)
    assert api.calls[:2] == [G, ("create", GROUP, VERSION, NS, PLURAL, NAME, 10)]
    assert api.calls[-1] == ("delete", GROUP, VERSION, NS, PLURAL, NAME)
    assert all(c == G for c in api.calls[2:-1]) and len(api.calls[2:-1]) == 6  # polled every 5 s until the 30 s deadline


def test_run_deploy_apply_marks_registry_and_dry_run_writes_manifest(tmp_path):
    dry = run_deploy(model_uri=URI, model_version=VER, out_dir=tmp_path / "dry", mode="dry-run",
                     schema_dir=str(SCHEMA_DIR), require_schema=True)
    assert dry["schema_checked"] and not (tmp_path / "registry").exists()
    written = yaml.safe_load((tmp_path / "dry" / "inferenceservice.yaml").read_text())
    assert written["spec"]["predictor"]["canaryTrafficPercent"] == 10

    obj = rendered(name=NAME, namespace=NS)
    api = RecordingApi([None, with_status(obj, "True")])
    res = run_deploy(model_uri=URI, model_version=VER, out_dir=tmp_path / "apply", mode="apply",
                     schema_dir=str(SCHEMA_DIR), registry_root=str(tmp_path / "registry"),
                     model_name="adrec-visual-embedder", api=api)
    assert res["action"] == "created" and res["ready"]
    assert res["new_model_traffic_percent"] == deploy.new_model_traffic_percent(obj)
    dep = yaml.safe_load((tmp_path / "registry" / "adrec-visual-embedder" / "deployed.json").read_text())
    assert dep["version"] == VER and dep["uri"] == URI
    assert run_deploy(model_uri=URI, model_version=VER, out_dir=tmp_path / "skip", mode="skip") == {"mode": "skip"}


def test_rbac_allows_what_the_deployer_calls():
    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[3] / "k8s" / "pipelines" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    verbs = {v for r in role["rules"] if "inferenceservices" in r["resources"] for v in r["verbs"]}
    used = {m.split("_")[0] for m in dir(RecordingApi) if m.endswith("_namespaced_custom_object")}
    assert used == {"get", "create", "patch", "delete"} and used <= verbs
    assert role["metadata"]["namespace"] == load_template("cpu")["metadata"]["namespace"]
