"""Request payload -> model input: encoded images (with byte and pixel limits) and ready tensors.

Decoding and the transform are pipelines.vision.preprocessing's (the one implementation that
training uses); this module only guards it: sizes are checked before anything is decoded,
and every failure becomes a `BadInput` with a reason (a metrics label) and a message for the
client.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipelines.vision.preprocessing import IMAGE_FORMATS, ImageDecodeError, PreprocessSpec, preprocess_bytes

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"  # IMAGE_FORMATS, for messages


class BadInput(ValueError):
    """The client sent something the model cannot take (answered with 400 / INVALID_ARGUMENT)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def at(self, index: int) -> "BadInput":
        return BadInput(self.reason, f"image {index}: {self.message}")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000


def b64decode(text: str | bytes, limits: ImageLimits) -> bytes:
    if isinstance(text, str):
        text = text.encode("ascii", errors="replace")
    if len(text) * 3 // 4 > limits.max_bytes + 3:
        raise BadInput("too_many_bytes", f"image is {len(text) * 3 // 4} bytes (base64 {len(text)}), "
                                         f"limit {limits.max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("bad_base64", f"invalid base64 image data: {exc}") from None


def check_header(data: bytes, limits: ImageLimits) -> tuple[str, int, int]:
    """Format, width, height from the header only (no pixel data decoded)."""
    if not data:
        raise BadInput("empty", "empty image")
    if len(data) > limits.max_bytes:
        raise BadInput("too_many_bytes", f"image is {len(data)} bytes, limit {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # lazy: reads the header; only the formats training decodes (IMAGE_FORMATS)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
                fmt, (w, h) = im.format or "?", im.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard (2x Image.MAX_IMAGE_PIXELS)
        raise BadInput("too_many_pixels", f"image too large: {exc}") from None
    except UnidentifiedImageError:
        other = _other_format(data)
        if other:
            raise BadInput("unsupported_format", f"unsupported image format {other}: send {SUPPORTED}") from None
        raise BadInput("not_an_image", f"not an image: the bytes match no supported image format "
                                       f"(send {SUPPORTED})") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's bad image
        raise BadInput("not_an_image", f"not a decodable image ({type(exc).__name__}: {exc})") from None
    if w <= 0 or h <= 0:
        raise BadInput("not_an_image", f"image has an empty size {w}x{h}")
    if w * h > limits.max_pixels:
        raise BadInput("too_many_pixels", f"image is {w}x{h} = {w * h} pixels, limit {limits.max_pixels} pixels")
    return fmt, w, h


def _other_format(data: bytes) -> str | None:
    """The Pillow format outside IMAGE_FORMATS whose signature `data` starts with, if any (for the
    error message only: a signature check, nothing is parsed)."""
    prefix = data[:16]
    for fmt, (_, accept) in list(Image.OPEN.items()):
        if fmt not in IMAGE_FORMATS and accept is not None:
            try:
                if accept(prefix):
                    return fmt
            except Exception:  # noqa: BLE001, S112 - a plugin's signature check, best effort
                continue
    return None


def decode_image(data: bytes, spec: PreprocessSpec, limits: ImageLimits) -> np.ndarray:
    """Encoded image -> float32 CHW exactly as training preprocesses it."""
    fmt, w, h = check_header(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return preprocess_bytes(data, spec)
    except ImageDecodeError as exc:
        raise BadInput("corrupt_image", f"{fmt} image {w}x{h} could not be decoded: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - malformed files raise all sorts of errors inside Pillow
        raise BadInput("corrupt_image", f"{fmt} image {w}x{h} could not be decoded "
                                        f"({type(exc).__name__}: {exc})") from None


def check_tensor(x: np.ndarray, chw: tuple[int, int, int], max_images: int) -> np.ndarray:
    """An already-preprocessed batch: float32 [N, 3, H, W], finite values."""
    if x.dtype != np.float32:
        raise BadInput("bad_dtype", f"tensor dtype is {x.dtype}, expected float32 (FP32)")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(chw):
        raise BadInput("bad_shape", f"tensor shape is {list(x.shape)}, expected [N, {chw[0]}, {chw[1]}, {chw[2]}] "
                                    "(preprocessed as in the model card's `input`)")
    if x.shape[0] < 1 or x.shape[0] > max_images:
        raise BadInput("bad_shape", f"batch of {x.shape[0]} images, allowed 1..{max_images}")
    if not np.isfinite(x).all():
        raise BadInput("bad_values", "tensor contains NaN or infinite values")
    return x
