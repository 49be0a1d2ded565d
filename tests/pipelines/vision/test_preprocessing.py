import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipelines.vision.config import REPO_ROOT
from pipelines.vision.preprocessing import (
    IMAGE_FORMATS, ImageDecodeError, PreprocessSpec, load_rgb, normalize, preprocess, preprocess_bytes,
    resize_to_input)


def test_letterbox_keeps_aspect_and_pads_with_pad_value():
    spec = PreprocessSpec(height=40, width=40, pad_value=255)
    img = Image.new("RGB", (20, 10), (10, 20, 30))  # 2:1 landscape -> 40x20 content, 10 rows of padding each side
    out = resize_to_input(img, spec)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert (out[:10] == 255).all() and (out[30:] == 255).all()
    assert (out[10:30] == [10, 20, 30]).all()


def test_stretch_ignores_aspect():
    out = resize_to_input(Image.new("RGB", (20, 10), (1, 2, 3)), PreprocessSpec(height=16, width=8, resize="stretch"))
    assert out.shape == (16, 8, 3) and (out == [1, 2, 3]).all()


def test_normalize_matches_hand_computation_and_layout():
    spec = PreprocessSpec(height=1, width=2, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    px = np.array([[[255, 0, 51], [0, 255, 255]]], np.uint8)  # HWC 1x2
    x = normalize(px, spec)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [1.0, -1.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(x[:, 0, 1], [-1.0, 3.0, 1.0], atol=1e-6)
    batch = normalize(np.stack([px, px]), spec)
    assert batch.shape == (2, 3, 1, 2)


def test_preprocess_is_resize_then_normalize(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))
    spec = PreprocessSpec(height=64, width=48)
    np.testing.assert_array_equal(preprocess(img, spec), normalize(resize_to_input(img, spec), spec))
    p = tmp_path / "a.png"
    img.save(p)
    np.testing.assert_array_equal(preprocess_bytes(p.read_bytes(), spec), preprocess(load_rgb(p), spec))


def test_bad_files_raise_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="missing"):
        load_rgb(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt"):
        load_rgb(bad)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "ICNS", "ICO", "PPM"])
def test_only_the_supported_formats_are_decoded(tmp_path, fmt):
    """Training and serving decode IMAGE_FORMATS only (others, like ICNS, may decode to another
    size than their header declares)."""
    p = tmp_path / f"img.{fmt.lower()}"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(p, fmt)
    spec = PreprocessSpec(height=16, width=16)
    if fmt in IMAGE_FORMATS:
        assert preprocess_bytes(p.read_bytes(), spec).shape == (3, 16, 16)
        assert load_rgb(p).size == (32, 32)
    else:
        with pytest.raises(ImageDecodeError):
            preprocess_bytes(p.read_bytes(), spec)
        with pytest.raises(ImageDecodeError):
            load_rgb(p)


def test_spec_round_trip_and_validation():
    spec = PreprocessSpec(height=10, width=12, mean=(0.1, 0.2, 0.3))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        PreprocessSpec(resize="crop")


def test_importable_without_torch():
    code = "import sys; sys.modules['torch'] = None; import pipelines.vision.preprocessing as p; print(p.preprocess.__name__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
