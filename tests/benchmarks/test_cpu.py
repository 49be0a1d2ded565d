"""tree_cpu_s counts a process and its children's CPU, not an idle one's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.cpu import tree_cpu_s

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nprint('done', flush=True)\ntime.sleep(30)"


def test_tree_cpu_counts_descendants() -> None:
    # a parent that sleeps, with a child that burns 0.6 s of CPU and then waits
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {BURN!r}])\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_s(parent.pid) < 0.6 and time.monotonic() < deadline:
            time.sleep(0.1)
        burned = tree_cpu_s(parent.pid)
        assert 0.6 <= burned < 5.0
        time.sleep(0.5)
        assert tree_cpu_s(parent.pid) - burned < 0.2  # both now idle
        assert tree_cpu_s(os.getpid()) >= 0.0
    finally:
        for pid in [p for p in _children(parent.pid)] + [parent.pid]:
            os.kill(pid, 9)
        parent.wait()
    assert tree_cpu_s(parent.pid) == 0.0  # gone


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]
