"""Deploy a registered model as a new revision of the KServe InferenceService.

render()  -> the InferenceService from k8s/embedder/inferenceservice-<variant>.yaml with the model URI
             (STORAGE_URI, read by KServe's storage initializer), model version labels/annotations and
             ``canaryTrafficPercent`` (KServe keeps the previous ready revision for the rest of the traffic;
             canary rollout needs the Serverless deployment mode, see ``deployment_mode``);
Deployer.deploy() -> create (404) or merge-patch the object, wait until Ready for the new generation,
             and on failure roll back: patch the previous spec back (or delete what it created).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger("pipelines.kfp.deploy")

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "k8s" / "embedder"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


class DeployError(RuntimeError):
    pass


def load_template(variant: str = "cpu", template_dir: str | Path | None = None) -> dict:
    path = Path(template_dir or TEMPLATE_DIR) / f"inferenceservice-{variant}.yaml"
    return yaml.safe_load(path.read_text())


def _label_value(v: str) -> str:
    import re

    v = re.sub(r"[^A-Za-z0-9_.\-]", "_", v)[:63]
    return v.strip("_.-") or "unknown"


def render(template: dict, *, model_uri: str, model_version: str, name: str | None = None,
           namespace: str | None = None, canary_traffic_percent: int | None = None,
           deployment_mode: str = "", image: str = "") -> dict:
    if canary_traffic_percent is not None and not 0 <= int(canary_traffic_percent) <= 100:
        raise ValueError(f"canary_traffic_percent must be in [0, 100], got {canary_traffic_percent}")
    obj = copy.deepcopy(template)
    md = obj.setdefault("metadata", {})
    if name:
        md["name"] = name
    if namespace:
        md["namespace"] = namespace
    md.setdefault("labels", {})["adrec/model-version"] = _label_value(model_version)
    ann = md.setdefault("annotations", {})
    ann["adrec/model-uri"] = model_uri
    ann["adrec/model-version"] = model_version
    if deployment_mode:
        ann[MODE_ANNOTATION] = deployment_mode
    pred = obj["spec"]["predictor"]
    containers = pred.get("containers") or []
    if not containers:
        raise DeployError("template has no predictor container")
    c = containers[0]
    env = [e for e in c.get("env", []) if e.get("name") not in ("STORAGE_URI", "ADREC_EMBEDDER__MODEL_VERSION")]
    c["env"] = [{"name": "STORAGE_URI", "value": model_uri},
                {"name": "ADREC_EMBEDDER__MODEL_VERSION", "value": model_version}, *env]
    if image:
        c["image"] = image
    if canary_traffic_percent is not None and int(canary_traffic_percent) < 100:
        pred["canaryTrafficPercent"] = int(canary_traffic_percent)
    else:
        pred.pop("canaryTrafficPercent", None)
    return obj


def new_model_traffic_percent(obj: dict) -> int:
    """Share of the traffic the rendered InferenceService sends to the new revision: its
    ``canaryTrafficPercent`` unless the object runs in RawDeployment mode (which KServe deploys
    all at once, ignoring the canary), else 100."""
    canary = (obj.get("spec") or {}).get("predictor", {}).get("canaryTrafficPercent")
    mode = ((obj.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION, "")
    return 100 if canary is None or mode == "RawDeployment" else int(canary)


def is_ready(obj: dict) -> tuple[bool, str]:
    """(Ready for the current generation, reason)."""
    st = obj.get("status") or {}
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is not None and st.get("observedGeneration") is not None and st["observedGeneration"] < gen:
        return False, f"observedGeneration {st['observedGeneration']} < generation {gen}"
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", c.get("message") or c.get("reason") or f"Ready={c.get('status')}"
    return False, "no Ready condition yet"


def _failed(obj: dict) -> str | None:
    """A terminal failure KServe reports (e.g. the latest revision failed); None while progressing."""
    st = obj.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in ("RevisionFailed", "RevisionMissing", "InvalidSpec",
                                                                "ModelLoadFailed"):
            return f"{c.get('type')}: {c.get('reason')} {c.get('message', '')}".strip()
    return None


@dataclass
class DeployResult:
    name: str
    namespace: str
    action: str  # created | patched
    ready: bool
    rolled_back: bool = False
    message: str = ""
    previous_model_uri: str | None = None
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class Deployer:
    def __init__(self, api, *, timeout_s: float = 600, poll_s: float = 5, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.api, self.timeout_s, self.poll_s, self.sleep, self.clock = api, timeout_s, poll_s, sleep, clock

    def _get(self, ns: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def deploy(self, obj: dict) -> DeployResult:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        previous = self._get(ns, name)
        if previous is None:
            self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
            res = DeployResult(name, ns, "created", False)
        else:
            # JSON merge patch: our labels/annotations, and the spec turned into exactly the rendered one
            patch = {"metadata": {"labels": obj["metadata"].get("labels", {}),
                                  "annotations": obj["metadata"].get("annotations", {})},
                     "spec": merge_patch_diff(previous.get("spec") or {}, obj["spec"])}
            self.api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
            res = DeployResult(name, ns, "patched", False,
                               previous_model_uri=(previous["metadata"].get("annotations") or {}).get("adrec/model-uri"))
        ok, msg = self.wait_ready(ns, name)
        res.ready, res.message = ok, msg
        if not ok:
            res.rolled_back = True
            self.rollback(ns, name, previous, obj)
            raise DeployError(f"{ns}/{name} not ready ({msg}); rolled back "
                              f"{'(deleted the new object)' if previous is None else 'to the previous spec'}")
        return res

    def wait_ready(self, ns: str, name: str) -> tuple[bool, str]:
        deadline = self.clock() + self.timeout_s
        msg = "not checked"
        while True:
            cur = self._get(ns, name)
            if cur is None:
                return False, "object disappeared"
            ok, msg = is_ready(cur)
            if ok:
                return True, msg
            failed = _failed(cur)
            if failed:
                return False, failed
            if self.clock() >= deadline:
                return False, f"timeout after {self.timeout_s:.0f}s: {msg}"
            self.sleep(self.poll_s)

    def rollback(self, ns: str, name: str, previous: dict | None, rendered: dict) -> None:
        if previous is None:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            return
        current = self._get(ns, name) or rendered
        md, prev_md = rendered.get("metadata") or {}, previous.get("metadata") or {}
        patch = {"metadata": {kind: {k: (prev_md.get(kind) or {}).get(k) for k in (md.get(kind) or {})}
                              for kind in ("labels", "annotations")},
                 "spec": merge_patch_diff(current.get("spec") or {}, previous.get("spec") or {})}
        self.api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)


def merge_patch_diff(src, dst):
    """The RFC 7386 JSON merge patch that turns ``src`` into ``dst`` (null removes a key; lists are replaced)."""
    if not isinstance(src, dict) or not isinstance(dst, dict):
        return copy.deepcopy(dst)
    out = {k: None for k in src if k not in dst}
    for k, v in dst.items():
        if k not in src:
            out[k] = copy.deepcopy(v)
        elif src[k] != v:
            out[k] = merge_patch_diff(src[k], v) if isinstance(v, dict) and isinstance(src[k], dict) else copy.deepcopy(v)
    return out


def apply_merge_patch(target, patch):
    """RFC 7386 applied to ``target`` (what the API server does with a merge patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


def custom_objects_api(kubeconfig: str = ""):
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CustomObjectsApi()


def run_deploy(*, model_uri: str, model_version: str, out_dir: str | Path, mode: str = "apply", variant: str = "cpu",
               name: str = "", namespace: str = "", canary_traffic_percent: int = 10, deployment_mode: str = "",
               image: str = "", schema_dir: str = "", require_schema: bool = False, timeout_s: float = 600,
               registry_root: str = "", model_name: str = "", api=None) -> dict:
    """mode: ``apply`` (create/patch + wait + rollback), ``dry-run`` (render + validate only), ``skip``."""
    import json

    from . import k8s_schema, ops

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "skip":
        return {"mode": mode}
    if mode not in ("apply", "dry-run"):
        raise ValueError(f"deploy mode must be apply, dry-run or skip; got {mode!r}")
    obj = render(load_template(variant), model_uri=model_uri, model_version=model_version, name=name or None,
                 namespace=namespace or None, canary_traffic_percent=canary_traffic_percent,
                 deployment_mode=deployment_mode, image=image)
    (out / "inferenceservice.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    try:
        crd = k8s_schema.find_crd(k8s_schema.ISVC_CRD, schema_dir or None)
    except FileNotFoundError:
        if require_schema:
            raise
        crd = None
        log.warning("InferenceService CRD schema not found; rendered object not schema-checked")
    if crd is not None:
        k8s_schema.validate(obj, crd)
    result = {"mode": mode, "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
              "model_uri": model_uri, "model_version": model_version, "schema_checked": crd is not None,
              "new_model_traffic_percent": new_model_traffic_percent(obj)}
    if mode == "apply":
        res = Deployer(api or custom_objects_api(), timeout_s=timeout_s).deploy(obj)
        result.update(res.to_dict())
        if registry_root and model_name:
            ops.mark_deployed(registry_root, model_name, model_version, model_uri)
    (out / "deploy.json").write_text(json.dumps(result, indent=2))
    return result

