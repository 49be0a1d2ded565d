"""Turning fetched images into vectors: through the embedder service, or precomputed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from services.common.embedder_client import EmbedderClient, EmbedderError


class Embedder(Protocol):
    model_version: str

    def embed(self, images: Sequence[bytes], uris: Sequence[str]) -> list[np.ndarray | EmbedderError]:
        """One vector, or the error for that image, per input (in order)."""


class RemoteEmbedder:
    """KServe v2 embedder. A batch the server refuses (4xx) is retried image by image so one
    bad image does not sink its neighbours."""

    def __init__(self, client: EmbedderClient, model_version: str) -> None:
        self.client = client
        self.model_version = model_version

    def embed(self, images: Sequence[bytes], uris: Sequence[str]) -> list[np.ndarray | EmbedderError]:
        if not images:
            return []
        try:
            return list(self.client.embed_images(images))
        except EmbedderError as exc:
            if not exc.permanent:  # the embedder is down, not the input bad: the caller retries
                raise
            if len(images) == 1:
                return [exc]
        out: list[np.ndarray | EmbedderError] = []
        for img in images:
            try:
                out.append(self.client.embed_images([img])[0])
            except EmbedderError as exc:
                if not exc.permanent:
                    raise
                out.append(exc)
        return out


class PrecomputedEmbedder:
    """Vectors looked up by image URI from an .npz (`uris`, `vectors`); the embedder is bypassed."""

    needs_images = False

    def __init__(self, path: str | Path, model_version: str = "precomputed") -> None:
        data = np.load(path, allow_pickle=False)
        self._index = {str(u): i for i, u in enumerate(data["uris"])}
        self._vectors = data["vectors"].astype(np.float32)
        self.model_version = model_version

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def embed(self, images: Sequence[bytes], uris: Sequence[str]) -> list[np.ndarray | EmbedderError]:
        out: list[np.ndarray | EmbedderError] = []
        for uri in uris:
            i = self._index.get(uri)
            out.append(self._vectors[i] if i is not None
                       else EmbedderError(f"no precomputed vector for {uri}", permanent=True))
        return out

    @staticmethod
    def save(path: str | Path, uris: Sequence[str], vectors: np.ndarray) -> None:
        np.savez(path, uris=np.asarray(list(uris)), vectors=np.asarray(vectors, np.float32))
