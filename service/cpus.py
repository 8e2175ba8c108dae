"""How many CPUs this process may use: the CPUs it may run on, capped by a cgroup CPU quota.

`os.sched_getaffinity` honours taskset and cpusets but not a container's CPU limit (`docker
--cpus`, Kubernetes `limits.cpu`): a pod limited to 1 CPU on a 16-core node sees 16 CPUs there,
and the kernel throttles it to one CPU's time per period. The quota is in the cgroup's
`cpu.max` (v2: "QUOTA PERIOD" or "max PERIOD") or `cpu.cfs_quota_us` / `cpu.cfs_period_us`
(v1: quota -1 when unlimited), under the process's own cgroup from /proc/self/cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float:
    """The CPUs the process may run on, capped by its cgroup CPU quota if it has one."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    quota = cpu_quota(root, proc_cgroup)
    return min(cpus, quota) if quota is not None else cpus


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time per period the cgroup allows, or None: unlimited or unknown."""
    paths = _cgroup_paths(proc_cgroup)
    for v2 in _places(root, paths.get("", "/")):
        if (text := _read(v2 / "cpu.max")) is not None:
            quota, _, period = text.partition(" ")
            return _ratio(quota, period)
    for v1 in _places(root / "cpu", paths.get("cpu", "/")):
        if (quota_us := _read(v1 / "cpu.cfs_quota_us")) is not None:
            return _ratio(quota_us, _read(v1 / "cpu.cfs_period_us") or "")
    return None


def _places(mount: Path, path: str) -> list[Path]:
    """The process's cgroup directory, then the mount's root: a container without its own
    cgroup namespace sees the host's path in /proc/self/cgroup but its own cgroup at the root."""
    return [mount / path.lstrip("/"), mount]


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> the process's cgroup path ("" is v2's unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        value = int(quota) / int(period)
    except ValueError:  # "max", -1's absence, or nothing there
        return None
    return value if value > 0 else None
