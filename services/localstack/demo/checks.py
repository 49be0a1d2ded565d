"""The demo model (cached or trained) and the A/B experiment check through the API."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import registry
from ..paths import REPO_ROOT
from .settings import DemoError, DemoSettings


def train_config_hash(path: Path) -> str:
    """The config hash (pipelines.vision.export.config_hash) a model trained from `path` records in its card."""
    from pydantic import ValidationError

    from pipelines.vision.config import load_config
    from pipelines.vision.export import config_hash

    try:
        return config_hash(load_config(path))
    except (OSError, ValueError, ValidationError) as exc:
        raise DemoError(f"training config {path}: {exc}") from exc


def model_version(card: dict, model_dir: Path) -> str:
    """The version the demo's listings are embedded under: the card's version is the config's (the same
    string for every retrain), so the exported ONNX file's hash is added: `0.1.0+1a2b3c4d`."""
    onnx = model_dir / str(card.get("files", {}).get("onnx", "model.onnx"))
    try:
        digest = hashlib.sha256(onnx.read_bytes()).hexdigest()[:8]
    except OSError as exc:
        raise DemoError(f"model card in {model_dir} but no readable {onnx.name}: {exc}") from exc
    return f"{card.get('version', '')}+{digest}"


def ensure_model(s: DemoSettings, echo) -> dict:
    """The model card of the demo model, trained from `s.train_config` (reused when its card records that
    config's hash), with "artifact_version" (model_version()) added."""
    model_dir = Path(registry._model_dir())
    want = train_config_hash(s.train_config)
    card = registry.model_card(str(model_dir))
    if card is not None and card.get("config_hash") == want:
        echo(f"model: {card.get('name')} {card.get('version')} from {model_dir} (cached)")
        return {**card, "artifact_version": model_version(card, model_dir)}
    make = s.train_config == DemoSettings.model_fields["train_config"].default \
        and not os.environ.get("ADREC_EMBEDDER__MODEL_DIR")
    retrain = "`make train-demo`" if make else \
        f"`{sys.executable} -m pipelines.vision.cli run --config {s.train_config} --out {model_dir}`"
    if card is not None:
        why = (f"the model in {model_dir} was not trained from {s.train_config} (its config hash "
               f"{str(card.get('config_hash') or 'none')[:12]}, the config's {want[:12]})")
        if not s.train:
            raise DemoError(f"{why} and --no-train given: retrain it with {retrain}")
        if os.environ.get("ADREC_EMBEDDER__MODEL_DIR"):  # a model someone chose: never overwritten
            raise DemoError(f"{why}: retrain it with {retrain}, set ADREC_DEMO_TRAIN_CONFIG to the config it "
                            "was trained from, or unset ADREC_EMBEDDER__MODEL_DIR")
        echo(f"model: {why}; retraining it (about 11 minutes on 2 cores) ...")
    elif not s.train:
        raise DemoError(f"no exported model in {model_dir} and --no-train given: run {retrain} "
                        "or set ADREC_EMBEDDER__MODEL_DIR to an exported model")
    else:
        echo(f"model: none in {model_dir}; training the demo model (about 11 minutes on 2 cores) ...")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    rc = subprocess.run([sys.executable, "-m", "pipelines.vision.cli", "run", "--config", str(s.train_config),
                         "--out", str(model_dir)], cwd=REPO_ROOT, env=env).returncode
    card = registry.model_card(str(model_dir))
    if rc != 0 or card is None or card.get("config_hash") != want:
        raise DemoError(f"training failed (exit {rc}); its output is above, the run's files in {model_dir}")
    return {**card, "artifact_version": model_version(card, model_dir)}


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def first_experiment():
    """The local experiments file (what the recommender and the A/B service load) and its first experiment."""
    from services.experiments.config import ExperimentConfigError, load_experiments

    path = registry._experiments_file()
    try:
        config = load_experiments(path)
    except ExperimentConfigError as exc:
        raise DemoError(str(exc)) from exc
    exps = config.all_experiments()
    if not exps:
        raise DemoError(f"no A/B experiment in {path}")
    return config, exps[0]


def probe_users(config, exp, max_users: int) -> dict[str, str]:
    """One user id per variant of `exp` (by the same salted hash the recommender uses): the check
    then makes one request per variant, so its impressions stay balanced in the report."""
    from services.experiments.assignment import Assigner

    assigner = Assigner(config)
    users: dict[str, str] = {}  # variant -> user id
    for i in range(max_users):
        uid = f"demo-probe-{i:03d}"
        for a in assigner.assign(uid).assignments:
            if a.experiment_id == exp.id:
                users.setdefault(a.variant, uid)
        if len(users) == len(exp.variants):
            return users
    raise DemoError(f"A/B experiment {exp.id}: no user out of {max_users} lands in variant(s) "
                    f"{', '.join(sorted({v.name for v in exp.variants} - set(users)))}; check its traffic and weights")


def check_experiment(rec_url: str, ab_url: str, seed: str, exp, users: dict[str, str]) -> None:
    """Ask for listings similar to `seed` as each probe user: the recommender must assign the variant
    the configuration says, and find similar items; the A/B service must know the experiment."""
    for variant, uid in users.items():
        url = f"{rec_url}/v1/listings/{seed}/similar?k=4&user_id={uid}"
        for attempt in range(20):  # Feast is written just after Milvus: a moment's 404 is normal
            try:
                body = get_json(url)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or attempt == 19:
                    raise DemoError(f"GET {url}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
                time.sleep(0.5)
        got = {a["experiment_id"]: a["variant"] for a in body["experiments"]}
        if got.get(exp.id) != variant:
            raise DemoError(f"A/B experiment {exp.id}: the recommender assigned {uid} to {got.get(exp.id)!r}, "
                            f"{registry._experiments_file()} says {variant!r}")
        if not body["items"]:
            raise DemoError(f"the recommender found no listing similar to {seed}; see its log")
    listed = get_json(f"{ab_url}/v1/experiments")["experiments"]
    if not any(e["id"] == exp.id and e["configured"] for e in listed):
        raise DemoError(f"the A/B metrics service does not know experiment {exp.id}: {listed}")
