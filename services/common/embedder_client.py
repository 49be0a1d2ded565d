"""The platform's one client of the embedder (KServe open inference protocol v2, REST).

Sends encoded images as a `BYTES` tensor of base64 strings in the JSON body (KServe 0.21's
REST binary extension cannot carry non-UTF-8 bytes) and reads back the `embedding` FP32
tensor. Synchronous (httpx) because the ingest worker is; the recommender calls it from a
thread. Settings block: `embedder_client` (env ADREC_EMBEDDER_CLIENT__*), not to be confused
with the server's own `embedder` block.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import httpx
import numpy as np
import orjson
from kserve.protocol.infer_type import InferResponse
from pydantic import BaseModel, Field

INFERENCE_HEADER = "inference-header-content-length"


class EmbedderClientConfig(BaseModel):
    url: str = "http://127.0.0.1:18080"
    model_name: str = "adrec-visual-embedder"
    input_name: str = "image_bytes"
    output_name: str = "embedding"
    timeout_s: float = Field(default=10.0, gt=0)
    max_batch: int = Field(default=32, ge=1)


class EmbedderError(Exception):
    """`permanent` for 4xx (the input is bad: retrying cannot help), else transient."""

    def __init__(self, reason: str, permanent: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


class EmbedderClient:
    def __init__(self, cfg: EmbedderClientConfig) -> None:
        self.cfg = cfg
        self._http = httpx.Client(base_url=cfg.url, timeout=cfg.timeout_s)

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        """Embeddings [len(images), D] for encoded images, in request order."""
        if not images:
            return np.zeros((0, 0), np.float32)
        out = [self._infer(list(images[i:i + self.cfg.max_batch]))
               for i in range(0, len(images), self.cfg.max_batch)]
        return np.concatenate(out, axis=0)

    def _infer(self, images: list[bytes]) -> np.ndarray:
        body = orjson.dumps({"inputs": [{"name": self.cfg.input_name, "shape": [len(images)], "datatype": "BYTES",
                                         "data": [base64.b64encode(b).decode("ascii") for b in images]}]})
        try:
            resp = self._http.post(f"/v2/models/{self.cfg.model_name}/infer", content=body,
                                   headers={"content-type": "application/json"})
        except httpx.TimeoutException as exc:
            raise EmbedderError(f"embedder timeout after {self.cfg.timeout_s}s", permanent=False) from exc
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embedder unreachable: {exc}", permanent=False) from exc
        if 400 <= resp.status_code < 500 and resp.status_code not in (404, 408, 429):
            raise EmbedderError(f"embedder refused the input: HTTP {resp.status_code} {_error_text(resp)}",
                                permanent=True, status=resp.status_code)
        if not resp.is_success:  # 404: model not loaded (yet) under that name; 5xx: server trouble
            raise EmbedderError(f"embedder error: HTTP {resp.status_code} {_error_text(resp)}",
                                permanent=False, status=resp.status_code)
        length = int(resp.headers.get(INFERENCE_HEADER, len(resp.content)))
        result = InferResponse.from_bytes(resp.content, length)
        for output in result.outputs:
            if output.name == self.cfg.output_name:
                arr = np.asarray(output.as_numpy(), dtype=np.float32).reshape(output.shape)
                if arr.shape[0] != len(images):
                    raise EmbedderError(f"embedder returned {arr.shape[0]} vectors for {len(images)} images",
                                        permanent=False)
                return arr
        raise EmbedderError(f"embedder response has no output {self.cfg.output_name!r}", permanent=False)

    def ready(self) -> bool:
        try:
            return self._http.get(f"/v2/models/{self.cfg.model_name}/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("error") or body.get("detail") or body)[:500]
    except ValueError:
        return resp.text[:500]
