"""Fetch listing images: local paths / file:// under allowed roots, or http(s) with a size
limit, a timeout and an address allowlist (private, loopback and link-local addresses are
refused unless configured, so a listing cannot make the worker call internal services)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx


class FetchError(Exception):
    """`permanent`: retrying cannot help (bad URI, 404, too large); else transient."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class ImageFetcher:
    def __init__(self, *, allowed_roots: Sequence[str | Path] = (), max_bytes: int = 10 * 2**20,
                 timeout_s: float = 5.0, allow_private: bool = False,
                 allowed_hosts: Sequence[str] = ()) -> None:
        self.allowed_roots = [Path(r).resolve() for r in allowed_roots]
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.allowed_hosts = set(allowed_hosts)
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def fetch(self, uri: str) -> bytes:
        try:
            parsed = urlparse(uri)
        except ValueError as exc:  # e.g. 'http://[::1/x.jpg'
            raise FetchError(f"invalid image URI {uri!r}: {exc}", permanent=True) from exc
        if parsed.scheme in ("http", "https"):
            return self._fetch_http(uri, parsed.hostname or "")
        if parsed.scheme == "file":
            return self._fetch_file(Path(unquote(parsed.path)))
        if parsed.scheme == "" and uri:
            return self._fetch_file(Path(uri))
        raise FetchError(f"unsupported image URI scheme {parsed.scheme!r}", permanent=True)

    # -- files ---------------------------------------------------------------------------

    def _fetch_file(self, path: Path) -> bytes:
        try:
            path = path.resolve()
        except ValueError as exc:  # e.g. an embedded NUL byte (file:///a%00.jpg)
            raise FetchError(f"invalid image path {str(path)!r}: {exc}", permanent=True) from exc
        if not any(path.is_relative_to(root) for root in self.allowed_roots):
            raise FetchError(f"image path {path} is outside the allowed roots", permanent=True)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise FetchError(f"image is {size} bytes, limit {self.max_bytes}", permanent=True)
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise FetchError(f"image not found: {path}", permanent=True) from exc
        except IsADirectoryError as exc:
            raise FetchError(f"image path is a directory: {path}", permanent=True) from exc
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc}", permanent=False) from exc

    # -- http ----------------------------------------------------------------------------

    def check_host(self, host: str) -> None:
        if not host:
            raise FetchError("image URL has no host", permanent=True)
        if host in self.allowed_hosts or self.allow_private:
            return
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve {host}: {exc}", permanent=False) from exc
        except (UnicodeError, ValueError) as exc:  # e.g. a DNS label over 63 characters (IDNA)
            raise FetchError(f"invalid host name {host!r}: {exc}", permanent=True) from exc
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
                    or ip.is_unspecified:
                raise FetchError(f"refusing to fetch from {host} ({ip}): not a public address", permanent=True)

    def _fetch_http(self, uri: str, host: str) -> bytes:
        self.check_host(host)
        try:
            with self._http.stream("GET", uri) as resp:
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    raise FetchError(f"HTTP {resp.status_code} from {host}", permanent=False)
                if resp.status_code != 200:
                    raise FetchError(f"HTTP {resp.status_code} for {uri}", permanent=True)
                declared = int(resp.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise FetchError(f"image is {declared} bytes, limit {self.max_bytes}", permanent=True)
                chunks, total = [], 0
                for chunk in resp.iter_bytes():
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise FetchError(f"image exceeds {self.max_bytes} bytes", permanent=True)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise FetchError(f"timeout fetching {uri}", permanent=False) from exc
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:  # e.g. a control character in the path
            raise FetchError(f"invalid image URL {uri!r}: {exc}", permanent=True) from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"error fetching {uri}: {exc}", permanent=False) from exc

    def close(self) -> None:
        self._http.close()
