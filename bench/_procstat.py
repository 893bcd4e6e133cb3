"""CPU, memory and steal time of the server under test, read from /proc (Linux).

The machine these benchmarks run on is a shared VM: `steal` is the share of time the
hypervisor gave our vCPUs to someone else. It is reported beside every figure because
a run with high steal is a run on a slower machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the server and the workers it started)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class CpuWindow:
    """CPU used by each process of a tree, and machine steal, between start() and stop()."""

    pid: int
    _cpu: dict[int, float] | None = None
    _stat: list[int] | None = None

    def start(self) -> "CpuWindow":
        self._cpu = {p: cpu_seconds(p) for p in process_tree(self.pid)}
        self._stat = _machine()
        return self

    def stop(self, seconds: float) -> dict:
        assert self._cpu is not None and self._stat is not None
        after = _machine()
        deltas = [b - a for a, b in zip(self._stat, after)]
        total = sum(deltas) or 1
        per_process = {}
        for p in process_tree(self.pid):
            name = "api" if p == self.pid else ("worker" if "worker" in command_of(p) else command_of(p)[:40])
            used = cpu_seconds(p) - self._cpu.get(p, 0.0)
            per_process[f"{name}:{p}"] = {"cpu_percent": round(100 * used / seconds, 1), "rss_mb": round(rss_bytes(p) / 2**20, 1)}
        return {"processes": per_process, "machine_steal_percent": round(100 * deltas[7] / total, 1),
                "machine_busy_percent": round(100 * (total - deltas[3] - deltas[4]) / total, 1)}


def _machine() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]
