"""Decoding guards: the training transform exactly, sizes checked before any pixel is decoded."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest
from PIL import Image

from pipelines.vision.preprocessing import PreprocessSpec, preprocess_bytes
from services.embedder.decoding import BadInput, ImageLimits, b64decode, check_tensor, decode_image

from .test_bad_input import encoded, png_claiming

SPEC = PreprocessSpec(height=64, width=48)


def test_same_tensor_as_training_preprocessing(jpegs):
    for data in jpegs:
        np.testing.assert_array_equal(decode_image(data, SPEC, ImageLimits()), preprocess_bytes(data, SPEC))


def test_png_with_alpha_and_greyscale_are_converted_like_training():
    for mode in ("RGBA", "L", "P"):
        buf = io.BytesIO()
        Image.new(mode, (30, 20)).save(buf, "PNG")
        out = decode_image(buf.getvalue(), SPEC, ImageLimits())
        assert out.shape == (3, 64, 48) and out.dtype == np.float32


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"GIF89a" + b"\0" * 3, "not_an_image"),
    (b"plain text", "not_an_image"),
    (png_claiming(5000, 5000), "too_many_pixels"),
    (png_claiming(300_000, 300_000), "too_many_pixels"),
    (b"\xff\xd8" + b"x" * 2000, "too_many_bytes"),
])
def test_rejections(data, reason):
    with pytest.raises(BadInput) as info:
        decode_image(data, SPEC, ImageLimits(max_bytes=1000, max_pixels=1_000_000))
    assert info.value.reason == reason


def test_truncated_jpeg(jpegs):
    with pytest.raises(BadInput) as info:
        decode_image(jpegs[-1][: len(jpegs[-1]) // 2], SPEC, ImageLimits())
    assert info.value.reason == "corrupt_image" and "JPEG" in info.value.message


def test_base64_limits_and_errors():
    assert b64decode(base64.b64encode(b"abc").decode(), ImageLimits()) == b"abc"
    with pytest.raises(BadInput, match="limit 10 bytes"):
        b64decode(base64.b64encode(b"x" * 100), ImageLimits(max_bytes=10))
    with pytest.raises(BadInput) as info:
        b64decode("not*base64", ImageLimits())
    assert info.value.reason == "bad_base64"


def test_check_tensor():
    ok = np.zeros((2, 3, 64, 48), np.float32)
    assert check_tensor(ok, (3, 64, 48), 8) is ok
    for bad, reason in [(ok.astype(np.float16), "bad_dtype"), (ok[:, :2], "bad_shape"), (ok[0], "bad_shape"),
                        (np.zeros((9, 3, 64, 48), np.float32), "bad_shape"), (ok[:0], "bad_shape")]:
        with pytest.raises(BadInput) as info:
            check_tensor(bad, (3, 64, 48), 8)
        assert info.value.reason == reason
    ok[0, 0, 0, 0] = np.inf
    with pytest.raises(BadInput, match="NaN or infinite"):
        check_tensor(ok, (3, 64, 48), 8)


SUPPORTED_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]


def test_serving_opens_the_formats_training_opens():
    from pipelines.vision import preprocessing
    from services.embedder import decoding

    assert decoding.IMAGE_FORMATS is preprocessing.IMAGE_FORMATS
    assert list(preprocessing.IMAGE_FORMATS) == SUPPORTED_FORMATS


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_supported_formats_decode_like_training(fmt):
    data = encoded(fmt)
    out = decode_image(data, SPEC, ImageLimits())
    assert out.shape == (3, 64, 48)
    np.testing.assert_array_equal(out, preprocess_bytes(data, SPEC))


@pytest.mark.parametrize("fmt", ["ICNS", "ICO", "PPM", "PCX", "QOI", "DDS"])
def test_other_formats_pillow_opens_are_refused_before_decoding(fmt):
    """Only IMAGE_FORMATS are opened: an ICNS declaring 128x128 may embed a 13000x13000 PNG, so
    the header's size (the pixel limit) cannot be trusted for the others."""
    data = encoded(fmt, (64, 64))
    with pytest.raises(BadInput) as info:
        decode_image(data, SPEC, ImageLimits())
    assert info.value.reason == "unsupported_format"
    assert info.value.message.startswith(f"unsupported image format {fmt}: send JPEG, PNG, WebP")


def test_icns_hiding_a_large_png_is_refused_by_format_not_decoded():
    big = encoded("PNG", (3000, 3000))  # 9 MP inside an icon whose header says 128x128
    icns = b"icns" + struct.pack(">I", 8 + 8 + len(big)) + b"ic07" + struct.pack(">I", 8 + len(big)) + big
    with Image.open(io.BytesIO(icns)) as im:  # what Pillow would do unrestricted
        assert im.format == "ICNS" and im.size == (128, 128)
    with pytest.raises(BadInput) as info:
        decode_image(icns, SPEC, ImageLimits(max_pixels=1_000_000))
    assert info.value.reason == "unsupported_format"
