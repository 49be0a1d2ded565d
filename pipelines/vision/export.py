"""Export the embedding network (heads dropped): ONNX (dynamic batch) + TorchScript + model card.

ONNX contract: input "images" float32 [N, 3, H, W] preprocessed by pipelines.vision.preprocessing;
output "embedding" float32 [N, D], L2-normalised.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .model import EmbeddingNet

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "images", "embedding"
ONNX_FILE, TORCHSCRIPT_FILE = "model.onnx", "model.torchscript.pt"
_NOT_RECIPE = {"data": ("root", "cache_dir")}  # where the data and the cache are, not what is trained


def config_hash(cfg) -> str:
    """sha256 of the resolved training config (a VisionConfig), less where the data and cache live:
    the model card records it, so a consumer (`make demo`) can tell a model of another recipe."""
    d = cfg.model_dump(mode="json")
    for section, keys in _NOT_RECIPE.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _cpu_eval(net: EmbeddingNet) -> EmbeddingNet:
    net = copy.deepcopy(net).cpu().float().eval()
    net = net.to(memory_format=torch.contiguous_format)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def export_onnx(net: EmbeddingNet, path: Path, height: int, width: int, opset: int = 18) -> Path:
    net = _cpu_eval(net)
    x = torch.zeros(2, 3, height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # TorchScript-based exporter: fast, exact dynamic_axes support
            torch.onnx.export(net, (x,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - fall back to the torch.export-based exporter
            log.info("legacy ONNX export failed (%s); using dynamo exporter", exc)
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(net, (x,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                     dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True,
                                     external_data=False)
            prog.save(str(path))
    import onnx

    onnx.checker.check_model(str(path))
    return path


def export_torchscript(net: EmbeddingNet, path: Path, height: int, width: int) -> Path:
    net = _cpu_eval(net)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(net, torch.zeros(2, 3, height, width), check_trace=False)
        ts = torch.jit.freeze(ts.eval())
    ts.save(str(path))
    return path


def parity(net: EmbeddingNet, x: np.ndarray, onnx_path: Path | None = None, ts_path: Path | None = None) -> dict:
    """Max |eager - exported| over a batch ``x`` (float32 NCHW)."""
    net = _cpu_eval(net)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    out = {"batch": int(x.shape[0])}
    if onnx_path is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        out["onnx_max_abs_diff"] = float(np.abs(got - ref).max())
        out["onnx_output_norm_max_dev"] = float(np.abs(np.linalg.norm(got, axis=1) - 1).max())
    if ts_path is not None:
        ts = torch.jit.load(str(ts_path))
        with torch.no_grad():
            got = ts(torch.from_numpy(x)).numpy()
        out["torchscript_max_abs_diff"] = float(np.abs(got - ref).max())
    return out


def model_card(cfg, *, embedding_dim: int, heads: list[dict], metrics: dict | None, data_hash: str,
               weights_info: dict | None = None, parity_info: dict | None = None, opset: int | None = None,
               skipped: dict | None = None) -> dict:
    """``files``: what `export_all` writes: model.onnx, plus model.torchscript.pt when export.torchscript."""
    spec = cfg.input.spec()
    files = {"onnx": ONNX_FILE} | ({"torchscript": TORCHSCRIPT_FILE} if cfg.export.torchscript else {})
    return {
        "name": cfg.name,
        "version": cfg.version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": cfg.model.backbone, "weights": cfg.model.weights, "init": weights_info or {}},
        "embedding_dim": embedding_dim,
        "embedding": {"normalised": "L2", "similarity": "cosine (= dot product)",
                      "layer": "projection after global pooling (heads dropped)" if cfg.model.embedding_dim else
                      "global-pooled backbone features (heads dropped)"},
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "size": [spec.height, spec.width],
                  "height": spec.height, "width": spec.width, "mean": list(spec.mean), "std": list(spec.std),
                  "scale": "pixel / 255 before mean/std", "resize": spec.resize,
                  "resize_policy": ("fit inside HxW preserving aspect (bilinear), pad symmetrically with "
                                    f"RGB({spec.pad_value},{spec.pad_value},{spec.pad_value})" if spec.resize == "letterbox"
                                    else "bilinear resize to HxW ignoring aspect"),
                  "pad_value": spec.pad_value, "channel_order": "RGB",
                  "implementation": "pipelines.vision.preprocessing.preprocess"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", embedding_dim]},
        "heads_trained": [{k: v for k, v in h.items() if k != "classes"} for h in heads],
        "metrics": metrics or {},
        "data_hash": data_hash,
        "config_hash": config_hash(cfg),
        "data_skipped": skipped or {},
        "onnx_opset": opset,
        "parity": parity_info or {},
        "files": files,
    }


def export_all(net: EmbeddingNet, cfg, out_dir: Path, *, card_kwargs: dict, sample: np.ndarray | None = None) -> dict:
    """Write model.onnx, model.torchscript.pt (if export.torchscript) and model_card.json; returns the card."""
    out = Path(out_dir)
    spec = cfg.input.spec()
    onnx_path = export_onnx(net, out / ONNX_FILE, spec.height, spec.width, cfg.export.opset)
    ts_path = export_torchscript(net, out / TORCHSCRIPT_FILE, spec.height, spec.width) if cfg.export.torchscript else None
    if ts_path is None:  # a stale TorchScript file from an earlier export must not be served with this card
        (out / TORCHSCRIPT_FILE).unlink(missing_ok=True)
    if sample is None:
        sample = np.random.default_rng(0).standard_normal((3, 3, spec.height, spec.width)).astype(np.float32)
    par = parity(net, sample, onnx_path, ts_path)
    par["atol"] = cfg.export.parity_atol
    par["ok"] = all(v <= cfg.export.parity_atol for k, v in par.items() if k.endswith("max_abs_diff"))
    card = model_card(cfg, parity_info=par, opset=cfg.export.opset, **card_kwargs)
    (out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    if not par["ok"]:
        raise RuntimeError(f"export parity check failed: {par}")
    return card
