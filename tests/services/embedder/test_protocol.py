"""Protocol parsing below the server: the binary BYTES tensor reader and the checks that run
before any element is read."""

from __future__ import annotations

import struct

import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from services.embedder.decoding import BadInput, ImageLimits
from services.embedder.protocol import bytes_elements, parse_v2_grpc


def encode(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def grpc_bytes_request(shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="image_bytes", datatype="BYTES", shape=shape)
    req.raw_input_contents.append(raw)
    return req


def test_bytes_elements_reads_what_kserve_writes():
    assert bytes_elements(encode(b"abc", b"", b"\0" * 5), 3) == [b"abc", b"", b"\0" * 5]


@pytest.mark.parametrize("raw,count,message", [
    (encode(b"abc"), 2, "1 BYTES elements, the shape needs 2"),
    (encode(b"abc", b"d"), 1, "more than 1 BYTES elements"),
    (encode(b"abc")[:-1], 1, "element 0 is truncated (3 bytes declared, 2 left)"),
    (encode(b"abc") + b"\1\0", 2, "element 1 is truncated (no 4-byte length)"),
    (b"", 1, "0 BYTES elements"),
])
def test_bytes_elements_must_fit_the_count(raw, count, message):
    with pytest.raises(BadInput) as info:
        bytes_elements(raw, count)
    assert info.value.reason == "bad_shape" and message in info.value.message


def test_bytes_elements_stops_after_count():
    """What follows the expected elements is never parsed: a broken 5th element or millions of
    empty ones are refused the same way, without reading them."""
    with pytest.raises(BadInput, match="more than 1 BYTES elements"):
        bytes_elements(encode(b"img") + b"\xff\xff\xff\xff", 1)  # a length far past the end: not read
    with pytest.raises(BadInput, match=r"more than 1 BYTES elements \(40000000 bytes after element 0\)"):
        bytes_elements(encode(b"") * 10_000_001, 1)


def test_grpc_shape_over_the_image_limit_is_refused_before_reading():
    raw = b"\xff" * 64  # not even a valid first element: the count check must come first
    with pytest.raises(BadInput) as info:
        parse_v2_grpc(grpc_bytes_request([1_000_000], raw), ImageLimits(), 256)
    assert info.value.reason == "bad_request" and "1000000 images, allowed 1..256" in info.value.message
    for shape, reason in (([0], "bad_request"), ([2, 0], "bad_request"), ([-1, -2], "bad_shape")):
        with pytest.raises(BadInput) as info:
            parse_v2_grpc(grpc_bytes_request(shape, encode(b"x", b"y")), ImageLimits(), 256)
        assert info.value.reason == reason, shape


def test_grpc_bytes_tensor_of_many_empty_elements_is_a_bad_shape():
    with pytest.raises(BadInput) as info:
        parse_v2_grpc(grpc_bytes_request([1], encode(b"") * 1_000_000), ImageLimits(), 256)
    assert info.value.reason == "bad_shape"
    assert "does not fit shape [1]: more than 1 BYTES elements" in info.value.message


def test_grpc_bytes_tensor_parses():
    images = [b"\x89PNG\r\n\x1a\nfake", b"\xff\xd8\xff fake"]
    parsed = parse_v2_grpc(grpc_bytes_request([2], encode(*images)), ImageLimits(), 256)
    assert parsed.images == images and parsed.kind == "bytes"
    parsed = parse_v2_grpc(grpc_bytes_request([2, 1], encode(*images)), ImageLimits(), 256)
    assert parsed.images == images
