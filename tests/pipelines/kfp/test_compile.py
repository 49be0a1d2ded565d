"""Compiled YAML: strict protobuf parse, GPU vs CPU train step, caching, fan-out, submit CLI, make target."""

import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as kec
from kfp.pipeline_spec import pipeline_spec_pb2 as ps

from pipelines.kfp import cli
from pipelines.kfp.pipeline import CACHING, GPU_NODE_SELECTOR, GPU_TOLERATIONS, compile_pipeline

IMAGE = "adrec/platform:9.9.9"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("kfp")
    out = {}
    for variant in ("gpu", "cpu"):
        path = compile_pipeline(d / f"{variant}.yaml", gpu=variant == "gpu", image=IMAGE)
        docs = list(yaml.safe_load_all(path.read_text()))
        # strict: ParseDict raises on any unknown field
        spec = json_format.ParseDict(docs[0], ps.PipelineSpec())
        platform = json_format.ParseDict(docs[1], ps.PlatformSpec()) if len(docs) > 1 else None
        out[variant] = (spec, platform, docs)
    return out


def _executors(spec):
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), ps.PipelineDeploymentConfig())
    return deployment.executors


def _k8s_config(platform, executor: str):
    if platform is None or "kubernetes" not in platform.platforms:
        return None
    executors = platform.platforms["kubernetes"].deployment_spec.executors
    if executor not in executors:
        return None
    return json_format.ParseDict(json_format.MessageToDict(executors[executor]), kec.KubernetesExecutorConfig())


def test_specs_parse_strictly(compiled):
    for variant, (spec, platform, docs) in compiled.items():
        assert spec.pipeline_info.name == f"adrec-visual-embedder-{variant}"
        execs = _executors(spec)  # PipelineDeploymentConfig, strict too
        assert {e.container.image for e in execs.values()} == {IMAGE}
        for name in execs:
            _k8s_config(platform, name)  # every kubernetes executor config parses strictly


def test_gpu_train_step_has_accelerator_selector_toleration(compiled):
    spec, platform, _ = compiled["gpu"]
    res = _executors(spec)["exec-train-model"].container.resources
    assert res.accelerator.resource_type == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    assert res.accelerator.resource_count == "{{$.inputs.parameters['pipelinechannel--accelerator_limit']}}"
    k8s = _k8s_config(platform, "exec-train-model")
    assert k8s.node_selector.node_selector_json.component_input_parameter == "node_selector"
    assert [t.toleration_json.component_input_parameter for t in k8s.tolerations] == ["tolerations"]
    # the run parameters behind them, with their UI defaults
    params = spec.root.input_definitions.parameters
    defaults = {k: json_format.MessageToDict(v.default_value) for k, v in params.items() if v.HasField("default_value")}
    assert defaults["accelerator_type"] == "nvidia.com/gpu"
    assert defaults["accelerator_limit"] == 1
    assert defaults["node_selector"] == GPU_NODE_SELECTOR
    assert defaults["tolerations"] == GPU_TOLERATIONS
    train_task = spec.root.dag.tasks["train-model"]
    for p in ("accelerator_type", "accelerator_limit"):  # per-run values wired from the pipeline parameters
        assert train_task.inputs.parameters[f"pipelinechannel--{p}"].component_input_parameter == p
    # only the train step goes to the GPU pool
    gpu_execs = [n for n, e in _executors(spec).items() if e.container.resources.accelerator.resource_type]
    assert gpu_execs == ["exec-train-model"]
    k8s_execs = platform.platforms["kubernetes"].deployment_spec.executors
    assert [n for n in k8s_execs if _k8s_config(platform, n).tolerations] == ["exec-train-model"]


def test_cpu_variant_has_no_gpu_settings(compiled):
    spec, platform, docs = compiled["cpu"]
    res = _executors(spec)["exec-train-model"].container.resources
    assert not res.accelerator.resource_type and not res.accelerator.resource_count
    k8s = _k8s_config(platform, "exec-train-model")
    assert not k8s.node_selector.node_selector_json.component_input_parameter and not k8s.node_selector.labels
    assert not k8s.tolerations
    assert "nvidia" not in json.dumps(docs[0]["deploymentSpec"])


def test_caching_is_set_per_step(compiled):
    spec, _, _ = compiled["gpu"]
    tasks = dict(spec.root.dag.tasks)
    tasks.update(spec.components["comp-for-loop-1"].dag.tasks)
    seen = {}
    for name, t in tasks.items():
        if t.component_ref.name.startswith("comp-for-loop"):
            continue
        key = re.sub(r"-\d+$", "", name)
        seen[key] = t.caching_options.enable_cache
    assert seen == CACHING
    assert seen["train-model"] and not seen["evaluate-gate"] and not seen["deploy-model"]


def test_graph_order_and_fan_out(compiled):
    spec, _, _ = compiled["gpu"]
    t = spec.root.dag.tasks
    deps = {n: set(x.dependent_tasks) for n, x in t.items()}
    assert deps["train-model"] == {"prepare-data"}
    assert deps["evaluate-gate"] == {"train-model"}
    assert deps["export-model"] >= {"evaluate-gate", "train-model"}
    assert "register-model" in deps["plan-backfill"]
    loop = t["for-loop-1"]
    assert loop.WhichOneof("iterator") == "parameter_iterator"
    assert loop.iterator_policy.parallelism_limit == 4
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--plan-backfill-Output"
    assert "for-loop-1" in deps["deploy-model"]  # the new model serves only once its vectors exist
    assert "deploy-model" in deps["switch-alias"]  # alias switched only after a Ready deploy


def test_volumes(compiled):
    for variant, (spec, platform, _) in compiled.items():
        mounts = {n: {(m.component_input_parameter.replace("pipelinechannel--", ""), m.mount_path)
                      for m in _k8s_config(platform, n).pvc_mount}
                  for n in platform.platforms["kubernetes"].deployment_spec.executors}
        assert ("data_pvc", "/data") in mounts["exec-train-model"]
        assert ("models_pvc", "/models") in mounts["exec-deploy-model"]
        assert ("data_pvc", "/data") in mounts["exec-backfill-shard"]


def test_ui_parameters_have_defaults(compiled):
    spec, _, _ = compiled["gpu"]
    params = spec.root.input_definitions.parameters
    missing = [k for k, v in params.items() if not v.HasField("default_value")]
    assert missing == []
    for k in ("gate_margin", "deployed_p_at_1", "canary_traffic_percent", "milvus_uri", "backfill_shards",
              "deploy_mode", "config_overrides", "train_overrides"):
        assert k in params


def test_cli_compile_writes_both_variants(tmp_path):
    assert cli.main(["compile", "--out-dir", str(tmp_path), "--image", IMAGE]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vision-pipeline-cpu.yaml", "vision-pipeline-gpu.yaml"]


def test_submit_creates_run_with_experiment_and_parameters(tmp_path, monkeypatch, capsys):
    import kfp

    calls = []

    class FakeRun:
        run_id = "run-123"

    class FakeClient:
        def __init__(self, host=None, namespace=None, existing_token=None, **kw):
            calls.append(("init", host, namespace))

        def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None,
                                             experiment_name=None, namespace=None, enable_caching=None, **kw):
            calls.append(("run", Path(pipeline_file).name, arguments, run_name, experiment_name, enable_caching))
            return FakeRun()

    monkeypatch.setattr(kfp, "Client", FakeClient)
    rc = cli.main(["submit", "--host", "http://kfp.example:8888", "--experiment", "nightly", "--variant", "cpu",
                   "--out-dir", str(tmp_path), "--run-name", "r1", "--param", "gate_margin=0.02",
                   "--param", 'config_overrides=["train.stage2.epochs=2"]', "--param", "milvus_alias=listings",
                   "--no-enable-caching"])
    assert rc == 0
    assert calls == [("init", "http://kfp.example:8888", None),
                     ("run", "vision-pipeline-cpu.yaml",
                      {"gate_margin": 0.02, "config_overrides": ["train.stage2.epochs=2"], "milvus_alias": "listings"},
                      "r1", "nightly", False)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"] == "run-123"


def test_make_targets_are_documented():
    text = (REPO / "mk" / "pipelines.mk").read_text()
    for target in ("pipelines", "pipeline-local", "pipeline-submit"):
        assert re.search(rf"^{target}:[^#\n]*## \S", text, re.M), target
    assert "$(PY)" in text
