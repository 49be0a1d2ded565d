"""Process helpers for tests that run the project's commands as a user would."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from pathlib import Path


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """Read the process's stdout until a line contains `marker`; fail with the output so far.

    A reader thread feeds a queue (select() on a buffered text pipe would miss lines).
    """
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = getattr(proc, "_line_queue", None) or queue.Queue()
    if not hasattr(proc, "_line_queue"):
        proc._line_queue = lines  # type: ignore[attr-defined]

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        out.append(line)
        if marker in line:
            return "".join(out)
    raise AssertionError(f"{marker!r} not seen (exit={proc.poll()}); output:\n{''.join(out)}")


def rest_of_output(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Wait for the process to exit and return what it printed after the last read_until."""
    proc.wait(timeout=timeout_s)
    lines = getattr(proc, "_line_queue", None)
    if lines is None:
        return proc.stdout.read() if proc.stdout else ""
    out = []
    while True:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            break
        if line is None:
            break
        out.append(line)
    return "".join(out)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")  # zombies are dead


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (e.g. a test's run directory)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and alive(int(d.name)):
                found.append(f"{d.name}: {cmd[:200]}")
    return found


def session_members(session_ids: set[int]) -> list[str]:
    """Live processes in any of these sessions: a service started in its own session (setsid) and
    every child it forked, even after the leader died."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
        if int(fields[3]) in session_ids and fields[0] != "Z":
            found.append(f"{d.name}: {stat[:120]}")
    return found
