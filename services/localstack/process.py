"""A child process started in its own session and stopped by PID (SIGTERM, then SIGKILL).

The PID is also written to a pid file so that `adrec-local stop` can clean up processes
left behind by a crashed supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ProcessError(RuntimeError):
    """A managed process failed to start or to become ready."""


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        pid_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.pid_path = pid_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            logf.close()
        if self.pid_path:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{self._proc.pid}\n{Path(self.argv[0]).name}\n")
        log.debug("started %s pid=%s", self.name, self._proc.pid)

    def wait_ready(self, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
        """Wait until `check()` is true; if it never is, or the wait is interrupted (Ctrl-C, SIGTERM
        raised as KeyboardInterrupt), stop the process: it runs in its own session and would outlive us."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.running():
                    raise ProcessError(f"{self.name} exited with code "
                                       f"{self._proc.returncode if self._proc else '?'} "
                                       f"before it was ready; last log lines:\n{self.tail()}")
                try:
                    if check():
                        return
                except Exception:  # noqa: BLE001 - readiness probes fail until ready
                    pass
                time.sleep(interval)
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise ProcessError(f"{self.name} not ready after {timeout:.0f}s; last log lines:\n{self.tail()}")

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process group; returns the exit code (None if it was not started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs, killing", self.name, timeout)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.pid_path and self.pid_path.exists():
            self.pid_path.unlink()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        self.stop(timeout=10, sig=signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_from_pidfile(pid_path: Path, timeout: float = 10.0) -> bool:
    """Stop a process recorded in a pid file by an earlier run. True if one was stopped.

    The file holds the pid and the program's name; a pid now used by another program is
    left alone.
    """
    try:
        pid_s, _, program = pid_path.read_text().partition("\n")
        pid, program = int(pid_s.strip()), program.strip()
    except (OSError, ValueError):
        pid_path.unlink(missing_ok=True)
        return False
    stopped = False
    if program and program in _cmdline(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped = True
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.killpg(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pid_path.unlink(missing_ok=True)
    return stopped
