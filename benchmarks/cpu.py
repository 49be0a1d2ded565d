"""CPU seconds of a process tree, from /proc (Linux): the noise-robust side of a throughput figure.

On a small shared machine, QPS moves 5-10% between identical runs, while the CPU a path spends per
request barely moves; and at saturation QPS is cores / (CPU per request of everything involved)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root_pid: int) -> float:
    """user + system CPU seconds of `root_pid` and its live descendants (0.0 if it is gone)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ... utime(11) stime(12)
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total
