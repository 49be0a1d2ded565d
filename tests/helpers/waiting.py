"""Polling for tests that wait on real servers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(fn: Callable[[], Any], timeout_s: float, what: str, interval: float = 0.5,
               retry_on: tuple[type[BaseException], ...] = (Exception,)) -> Any:
    """fn() until it returns something truthy (returned); an error of a `retry_on` type counts as
    "not yet", any other propagates. Fails with the last value or error after `timeout_s`."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except retry_on as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {last!r})")
