"""The exported model as the embedder serves it: model card + ONNX / TorchScript files.

The card (written by pipelines.vision.export) carries the served name and version, the
embedding size and the preprocessing spec; preprocessing itself is the one implementation in
pipelines.vision.preprocessing (numpy + Pillow only, no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipelines.vision.preprocessing import PreprocessSpec

CARD_FILE = "model_card.json"


class ModelBundleError(RuntimeError):
    """The model directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelBundle:
    root: Path
    card: dict
    name: str
    version: str
    embedding_dim: int
    spec: PreprocessSpec
    input_name: str
    output_name: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-image CHW shape the network takes."""
        return 3, self.spec.height, self.spec.width

    def file(self, runtime: str) -> Path:
        files = self.card.get("files") or {}
        if files and runtime not in files:  # the card lists what was exported: a same-named file is not this model
            raise ModelBundleError(f"the model card in {self.root} lists no {runtime} export (files: {sorted(files)}); "
                                   f"export it or serve another runtime")
        name = files.get(runtime) or {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}[runtime]
        path = self.root / name
        if not path.is_file():
            raise ModelBundleError(f"{runtime} model file {path} not found (model card lists {sorted(files)})")
        return path


def resolve_model_dir(uri: str, download_dir: Path | None = None) -> Path:
    """Local path or file:// URI -> Path; other schemes via kserve-storage when installed.

    In the cluster the KServe storage-initializer downloads `storageUri` to /mnt/models, so the
    container normally only sees a local path.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
        return path.resolve()
    try:
        from kserve_storage import Storage  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelBundleError(
            f"cannot fetch {uri!r}: remote storage needs the kserve-storage package; in the cluster set the "
            "InferenceService storageUri (the storage-initializer mounts it at /mnt/models)") from exc
    out = Path(download_dir or "/tmp/adrec-embedder-model")
    out.mkdir(parents=True, exist_ok=True)
    return Path(Storage.download_files(uri, str(out))).resolve()


def load_bundle(model_dir: str | Path) -> ModelBundle:
    root = Path(model_dir)
    card_path = root / CARD_FILE
    if not card_path.is_file():
        raise ModelBundleError(f"no {CARD_FILE} in {root}: train and export a model first (`make train-demo`) "
                               "or point ADREC_EMBEDDER__MODEL_DIR at an exported model")
    try:
        card = json.loads(card_path.read_text())
        inp = card["input"]
        spec = PreprocessSpec.from_dict(inp)
        bundle = ModelBundle(
            root=root, card=card, name=str(card["name"]), version=str(card["version"]),
            embedding_dim=int(card["embedding_dim"]), spec=spec,
            input_name=str(inp.get("name", "images")),
            output_name=str((card.get("output") or {}).get("name", "embedding")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelBundleError(f"invalid model card {card_path}: {exc!r}") from exc
    if spec.channel_order != "RGB" or spec.layout != "NCHW" or spec.dtype != "float32":
        raise ModelBundleError(f"unsupported input contract in {card_path}: "
                               f"{spec.channel_order}/{spec.layout}/{spec.dtype} (expected RGB/NCHW/float32)")
    return bundle
