"""`make demo` as a user runs it (`python -m services.localstack.demo`), on a small exported model,
60 listings and free ports: it reaches "ready", the API serves similar items for a published
listing, and Ctrl-C stops everything it started."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from itertools import islice
from pathlib import Path

import pytest

from services.ingest.catalogue import fashion_products
from services.localstack.demo import main as demo_main
from services.localstack.ports import free_port
from tests.helpers.procs import alive, processes_mentioning, read_until, rest_of_output, session_members

REPO = Path(__file__).resolve().parents[3]
SERVICE_PORTS = ("EMBEDDER", "EMBEDDER_GRPC", "INGEST_METRICS", "RECOMMENDER", "ABMETRICS")


def small_model_config(path: Path) -> Path:
    """The config tests.services.embedder.conftest.build_model (the small_model fixture) trains from:
    the demo reuses a model only when its card records this config's hash."""
    from tests.services.embedder.conftest import DIM, HEIGHT, MODEL_NAME, MODEL_VERSION, WIDTH

    path.write_text(json.dumps({"name": MODEL_NAME, "version": MODEL_VERSION,  # JSON is YAML
                                "input": {"height": HEIGHT, "width": WIDTH},
                                "model": {"weights": "none", "embedding_dim": DIM}}))
    return path


def demo_env(run_dir: Path, model_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {name: free_port() for name in SERVICE_PORTS}
    env = {**os.environ, "ADREC_LOCAL_RUN_DIR": str(run_dir), "ADREC_LOCAL_KAFKA_PORT": "0",
           "ADREC_LOCAL_KAFKA_CONTROLLER_PORT": "0", "ADREC_LOCAL_MILVUS_PORT": "0", "ADREC_LOCAL_REDIS_PORT": "0",
           **{f"ADREC_LOCAL_{k}_PORT": str(v) for k, v in ports.items()},
           "ADREC_EMBEDDER__MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1",
           "ADREC_DEMO_TRAIN_CONFIG": str(small_model_config(run_dir.parent / "small-model.yaml"))}
    return env, ports


def demo(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "services.localstack.demo", *args], cwd=REPO, env=env,
                            text=True, **kw)


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_demo_reaches_ready_serves_similar_items_and_ctrl_c_leaves_nothing(tmp_path: Path, small_model: Path) -> None:
    run_dir = tmp_path / "run"
    env, ports = demo_env(run_dir, small_model)
    rec, ab = f"http://127.0.0.1:{ports['RECOMMENDER']}", f"http://127.0.0.1:{ports['ABMETRICS']}"
    published = [e.id for e in islice(fashion_products(), 60)]
    with open(tmp_path / "stderr.log", "w") as err:
        proc = demo(["--limit", "60", "--no-train"], env, stdout=subprocess.PIPE, stderr=err)
    try:
        out = read_until(proc, "Ctrl-C to stop.", timeout_s=300)
        assert "catalogue: 60 listings from fashion-products; 0 already searchable, publishing 60" in out
        assert "ready: 60 listings searchable (model adrec-visual-embedder 0.0.1-test)" in out
        assert "A/B experiment shop-diversity running (control 50 / one-per-shop 50" in out
        assert "-> control" in out and "-> one-per-shop" in out
        for url in (f"{rec}/demo", f"{rec}/docs", f"{ab}/experiments/shop-diversity",
                    f"{ab}/v1/experiments/shop-diversity/report", f"{rec}/metrics"):
            assert url in out
        assert "60/60" in (tmp_path / "stderr.log").read_text()  # the progress bar reached the end

        seed = published[7]
        with urllib.request.urlopen(f"{rec}/v1/listings/{seed}/similar?k=5&user_id=a-buyer", timeout=10) as r:
            body = json.loads(r.read())
        ids = [i["listing_id"] for i in body["items"]]
        assert len(ids) == 5 and set(ids) <= set(published) - {seed}
        onnx = hashlib.sha256((small_model / "model.onnx").read_bytes()).hexdigest()[:8]
        assert body["seed"]["listing_id"] == seed and body["model_version"] == f"0.0.1-test+{onnx}"  # the artifact's
        assert body["experiments"][0]["experiment_id"] == "shop-diversity"
        assert body["experiments"][0]["variant"] in {"control", "one-per-shop"}

        state = json.loads((run_dir / "state.json").read_text())
        assert {c["name"] for c in state["components"]} == {
            "kafka", "milvus", "redis", "embedder", "ingest", "recommender", "abmetrics"}
        pids = {c["pid"] for c in state["components"]}
        assert all(alive(p) for p in pids)

        proc.send_signal(signal.SIGINT)
        rest = rest_of_output(proc, timeout_s=120)
        assert proc.returncode == 0, rest
        assert "stopping (signal)" in rest and rest.rstrip().endswith("stopped.")
        assert not any(alive(p) for p in pids)
        assert session_members(pids) == []  # nothing any service forked either
        assert processes_mentioning(str(run_dir)) == []
        assert not (run_dir / "state.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run([sys.executable, "-m", "services.localstack", "stop"], cwd=REPO, env=env,
                       capture_output=True, timeout=120)


def test_bad_options_are_refused_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    env, _ = demo_env(tmp_path / "run", tmp_path / "no-model")
    for k, v in env.items():
        if k.startswith("ADREC_"):
            monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_:
        demo_main(["--limit", "0"])
    assert exit_.value.code == 2 and "limit: Input should be greater than or equal to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        demo_main(["--dataset", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err

    assert demo_main(["--no-train"]) == 1
    assert f"no exported model in {tmp_path / 'no-model'} and --no-train given" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started
