"""Image preprocessing shared by training, evaluation, export and serving.

This is the ONLY implementation of the model's input transform. It depends on
numpy and Pillow only, so the KServe embedder can import it without torch.

Pipeline (described in the model card under ``input``):
  1. decode, convert to RGB (channel order RGB);
  2. ``letterbox``: resize preserving aspect ratio so the image fits inside
     (height, width) with bilinear filtering, then pad symmetrically with
     ``pad_value`` to exactly (height, width);  ``stretch``: resize to
     (height, width) ignoring aspect ratio;
  3. scale to [0, 1], subtract ``mean``, divide by ``std`` (per channel);
  4. HWC -> CHW float32 (NCHW when batched).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

RESIZE_POLICIES = ("letterbox", "stretch")
# The image containers training and serving decode (Image.open's `formats`). Pillow opens many
# more (ICNS, ICO, PSD, ...), some of which declare one size in the header and decode another
# (an ICNS declaring 128x128 may embed a 13000x13000 PNG), so the pixel limit checked on the
# header could not be trusted for them.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class PreprocessSpec:
    height: int = 160
    width: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "letterbox"
    pad_value: int = 255
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    interpolation: str = "bilinear"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {self.resize!r}; expected one of {RESIZE_POLICIES}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError("height and width must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d.pop("extra", None)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        keys = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kw = {k: v for k, v in d.items() if k in keys}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        return cls(**kw)


class ImageDecodeError(Exception):
    """Raised when a file is missing or cannot be decoded as an image."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to an RGB PIL image; raise ImageDecodeError on failure."""
    p = Path(path)
    if not p.is_file():
        raise ImageDecodeError(f"missing image: {p}")
    try:
        with Image.open(p, formats=IMAGE_FORMATS) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"corrupt image {p}: {exc}") from exc


def resize_to_input(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Steps 1-2: PIL image -> uint8 HWC array of exactly (spec.height, spec.width, 3)."""
    img = img.convert("RGB")
    h, w = spec.height, spec.width
    if spec.resize == "stretch":
        out = img.resize((w, h), Image.BILINEAR)
        return np.asarray(out, dtype=np.uint8).copy()
    scale = min(w / img.width, h / img.height)
    nw = max(1, min(w, round(img.width * scale)))
    nh = max(1, min(h, round(img.height * scale)))
    resized = img.resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("RGB", (w, h), (spec.pad_value,) * 3)
    canvas.paste(resized, ((w - nw) // 2, (h - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8).copy()


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Steps 3-4: uint8 HWC (or NHWC) -> float32 CHW (or NCHW)."""
    if pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
        raise ValueError(f"expected HWC or NHWC RGB array, got shape {pixels.shape}")
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    x = np.moveaxis(x, -1, -3)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """PIL image -> float32 CHW array ready for the model (add a batch axis for ONNX)."""
    return normalize(resize_to_input(img, spec), spec)


def preprocess_path(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    return preprocess(load_rgb(path), spec)


def preprocess_bytes(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    import io

    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            im.load()
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"corrupt image bytes: {exc}") from exc
    return preprocess(img, spec)
