"""Who used the CPUs during a measurement: the server, the load generator, everything else.

Read from /proc: machine-wide busy time (/proc/stat) minus the server's process group minus wrk
(a waited-for child, so RUSAGE_CHILDREN) gives the load of *other* work on the machine, which
is what makes figures on a shared box noisy. All values are in cores (CPU seconds / second).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from bench.common import group_pids

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / TICK


def group_cpu_s(pgid: int) -> float:
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / TICK


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuUse:
    server: float
    loadgen: float
    other: float


class CpuMeter:
    def __init__(self, server_pgid: int) -> None:
        self.pgid = server_pgid

    def __enter__(self) -> CpuMeter:
        self._t = time.perf_counter()
        self._m, self._s, self._c = machine_busy_s(), group_cpu_s(self.pgid), children_cpu_s()
        self._self = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t
        server = group_cpu_s(self.pgid) - self._s
        loadgen = children_cpu_s() - self._c
        mine = time.process_time() - self._self
        other = machine_busy_s() - self._m - server - loadgen - mine
        self.use = CpuUse(round(server / wall, 2), round(loadgen / wall, 2),
                          round(max(0.0, other) / wall, 2))
