"""Inference backends: ONNX Runtime (CPU or CUDA provider) and TorchScript; batch in, batch out.

`run(x)` takes float32 NCHW and returns float32 [N, D]; it is blocking and releases the GIL
while the network runs, so callers run it in a worker thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .model_bundle import ModelBundle

log = logging.getLogger(__name__)


class Backend(Protocol):
    description: str

    def run(self, x: np.ndarray) -> np.ndarray: ...


def ort_session_options(intra_op_threads: int = 0, allow_spinning: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if intra_op_threads:
        so.intra_op_num_threads = intra_op_threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return so


def ort_providers(provider: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError(f"CUDA provider requested but onnxruntime offers only {available} "
                           "(install onnxruntime-gpu in the GPU image)")
    if provider in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    def __init__(self, path: Path, input_name: str, output_name: str, *, provider: str = "auto",
                 intra_op_threads: int = 0, allow_spinning: bool = False) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), sess_options=ort_session_options(intra_op_threads, allow_spinning),
                                            providers=ort_providers(provider))
        self.input_name, self.output_name = input_name, output_name
        names = [i.name for i in self.session.get_inputs()]
        if input_name not in names:
            raise RuntimeError(f"{path} has inputs {names}, model card says {input_name!r}")
        self.description = f"onnxruntime {ort.__version__} {self.session.get_providers()[0]}"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


class TorchScriptBackend:
    def __init__(self, path: Path, *, provider: str = "auto", intra_op_threads: int = 0) -> None:
        import torch

        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)
        cuda = provider in ("cuda", "auto") and torch.cuda.is_available()
        if provider == "cuda" and not cuda:
            raise RuntimeError("CUDA requested but torch.cuda.is_available() is False")
        self.device = torch.device("cuda" if cuda else "cpu")
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self._torch = torch
        self.description = f"torchscript {torch.__version__} {self.device}"

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device, non_blocking=True))
        return out.float().cpu().numpy()


def create_backend(bundle: ModelBundle, runtime: str = "onnx", *, provider: str = "auto",
                   intra_op_threads: int = 0, allow_spinning: bool = False) -> Backend:
    if runtime == "onnx":
        backend: Backend = OnnxBackend(bundle.file("onnx"), bundle.input_name, bundle.output_name, provider=provider,
                                       intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
    elif runtime == "torchscript":
        backend = TorchScriptBackend(bundle.file("torchscript"), provider=provider, intra_op_threads=intra_op_threads)
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    log.info("loaded %s %s from %s (%s, pid %d)", bundle.name, bundle.version, bundle.root, backend.description,
             os.getpid())
    return backend
