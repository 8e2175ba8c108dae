"""service/cpus.py: the CPUs a process may use, a container's CPU limit included."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cpus import cpu_quota, usable_cpus


def cgroup(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


@pytest.mark.parametrize(("files", "proc", "expected"), [
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),  # v2, in a container's namespace
    ({"kubepods/pod1/cpu.max": "100000 100000\n"}, "0::/kubepods/pod1\n", 1.0),  # v2, nested
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # v2, no limit
    ({"cpu/docker/x/cpu.cfs_quota_us": "200000\n", "cpu/docker/x/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n", 2.0),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n",
     None),  # v1, no limit
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/x\n", 0.5),  # v1, the host's path, the container's cgroup at the root
    ({}, "", None),  # no cgroup filesystem at all
])
def test_the_quota_is_read_from_the_process_cgroup(tmp_path, files, proc, expected):
    assert cpu_quota(*cgroup(tmp_path, files, proc)) == expected


def test_a_quota_caps_the_cpus_the_process_may_run_on(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert usable_cpus(*cgroup(tmp_path / "a", {"cpu.max": "100000 100000"}, "0::/")) == 1.0
    assert usable_cpus(*cgroup(tmp_path / "b", {"cpu.max": "max 100000"}, "0::/")) == 4.0
    assert usable_cpus(*cgroup(tmp_path / "c", {"cpu.max": "800000 100000"}, "0::/")) == 4.0
