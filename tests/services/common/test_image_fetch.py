"""Image fetching: roots for files; for http(s) the size limit, timeout and address allowlist."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.common.image_fetch import FetchError, ImageFetcher

JPEG = b"\xff\xd8\xff" + b"x" * 2000


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        routes = {"/ok.jpg": (200, JPEG), "/big.jpg": (200, b"y" * 50_000), "/missing.jpg": (404, b""),
                  "/boom.jpg": (503, b"")}
        if self.path == "/slow.jpg":
            time.sleep(1.0)
        status, body = routes.get(self.path, (200, JPEG))
        self.send_response(status)
        if self.path != "/big.jpg":  # the big one does not declare its length: the stream is cut
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_http_fetch_limits_and_error_kinds(server: str) -> None:
    f = ImageFetcher(allowed_hosts=["127.0.0.1"], max_bytes=10_000, timeout_s=0.3)
    assert f.fetch(f"{server}/ok.jpg") == JPEG
    with pytest.raises(FetchError, match="exceeds 10000 bytes") as big:
        f.fetch(f"{server}/big.jpg")
    assert big.value.permanent
    with pytest.raises(FetchError, match="HTTP 404") as missing:
        f.fetch(f"{server}/missing.jpg")
    assert missing.value.permanent
    with pytest.raises(FetchError, match="HTTP 503") as boom:
        f.fetch(f"{server}/boom.jpg")
    assert not boom.value.permanent  # retried, then dead-lettered
    with pytest.raises(FetchError, match="timeout") as slow:
        f.fetch(f"{server}/slow.jpg")
    assert not slow.value.permanent


def test_private_and_loopback_addresses_are_refused_unless_allowed(server: str) -> None:
    strict = ImageFetcher()
    for uri in (f"{server}/ok.jpg", "http://10.1.2.3/x.jpg", "http://169.254.169.254/latest/meta-data",
                "http://[::1]/x.jpg", "http://0.0.0.0/x.jpg"):
        with pytest.raises(FetchError, match="not a public address") as err:
            strict.fetch(uri)
        assert err.value.permanent
    assert ImageFetcher(allow_private=True).fetch(f"{server}/ok.jpg") == JPEG
    with pytest.raises(FetchError, match="unsupported image URI scheme"):
        strict.fetch("ftp://example.com/x.jpg")


def test_file_paths_must_stay_inside_the_allowed_roots(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    f = ImageFetcher(allowed_roots=[tmp_path], max_bytes=1000)
    with pytest.raises(FetchError, match="limit 1000"):
        f.fetch(str(tmp_path / "a.jpg"))
    ok = ImageFetcher(allowed_roots=[tmp_path])
    assert ok.fetch(f"file://{tmp_path / 'a.jpg'}") == JPEG
    with pytest.raises(FetchError, match="outside the allowed roots"):
        ok.fetch(str(tmp_path / ".." / "etc" / "passwd"))
    with pytest.raises(FetchError, match="not found"):
        ok.fetch(str(tmp_path / "nope.jpg"))


@pytest.mark.parametrize("allow_private", [False, True])
def test_malformed_uris_are_a_permanent_fetch_error(tmp_path: Path, allow_private: bool) -> None:
    f = ImageFetcher(allowed_roots=[tmp_path], allow_private=allow_private)
    for uri, reason in [(f"{tmp_path}/a\x00.jpg", "invalid image path"),
                        (f"file://{tmp_path}/a%00.jpg", "invalid image path"),
                        ("http://[::1/x.jpg", "invalid image URI"),
                        ("http://" + "a" * 70 + ".example.com/x.jpg", "invalid"),
                        ("http://8.8.8.8/x\x01.jpg", "invalid image URL")]:
        with pytest.raises(FetchError, match=reason) as err:
            f.fetch(uri)
        assert err.value.permanent, uri
