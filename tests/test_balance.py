"""service/balance.py: workers publish their connection counts; one over its share sheds.

These play two workers in one process (two pids, one directory); tests/test_balance_live.py
runs the shedding in real servers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from service.balance import STALE_S, ConnectionBalance, share_limit


def test_share_limit_is_the_even_share_plus_slack() -> None:
    assert share_limit(60, [4]) == 32 + 3  # slack: a tenth of the share
    assert share_limit(5, [1, 0]) == 2 + 2  # at least 2
    assert share_limit(64, []) is None  # alone: nothing to even out


def worker(directory: Path, pid: int, connections: int) -> tuple[ConnectionBalance, list[int]]:
    closed: list[int] = []
    balance = ConnectionBalance(directory, lambda: closed.append(1), pid=pid)
    balance.attach(range(connections))
    return balance, closed


def test_the_worker_over_its_share_sheds_down_to_it(tmp_path: Path) -> None:
    busy, closed = worker(tmp_path, 1, 60)
    idle, _ = worker(tmp_path, 2, 4)
    idle.publish()
    busy.publish()
    shed = sum(busy.should_close() for _ in range(100))
    assert shed == 60 - 35  # none below 32 + 3
    idle.publish()
    assert not any(idle.should_close() for _ in range(10))
    idle.attach(range(29))  # the shed connections came back, to the other worker
    busy.attach(range(35))
    idle.publish()
    busy.publish()
    assert not busy.should_close()


def test_closes_are_counted_when_the_protocol_reports_them(tmp_path: Path) -> None:
    balance, closed = worker(tmp_path, 1, 3)
    balance.closed()
    balance.closed()
    assert closed == [1, 1]


def test_gone_and_stopped_workers_do_not_count(tmp_path: Path) -> None:
    busy, _ = worker(tmp_path, 1, 60)
    gone, _ = worker(tmp_path, 2, 0)
    gone.publish()
    old = time.time() - STALE_S - 1
    os.utime(gone.path, (old, old))  # a worker that died without removing its file
    busy.publish()
    assert busy.limit is None and not busy.should_close()
    stopped, _ = worker(tmp_path, 3, 0)
    stopped.publish()
    stopped.stop()
    assert not stopped.path.exists()
    busy.publish()
    assert busy.limit is None


async def published(balance: ConnectionBalance, count: int, timeout_s: float = 5.0) -> bool:
    """Whether the balance's file reads `count` within the timeout (it is written on a thread)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if balance.path.exists() and balance.path.read_bytes() == count.to_bytes(8, "little"):
            return True
        await asyncio.sleep(0.01)
    return False


def test_it_republishes_from_the_event_loop(tmp_path: Path) -> None:
    balance, _ = worker(tmp_path, 1, 3)
    other, _ = worker(tmp_path, 2, 60)
    other.publish()

    async def run() -> None:
        balance.start()
        assert await published(balance, 3)
        balance.attach(range(7))
        assert await published(balance, 7)
        assert balance.limit is not None  # the other worker's count was read too
        balance.stop()

    asyncio.run(run())
    assert not balance.path.exists()


def test_a_slow_filesystem_never_holds_up_the_event_loop(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The file work runs on a thread: while a write waits (here 0.6 s, as on a busy ext4
    journal) the loop goes on, and the limit is set once the exchange ends."""
    balance, _ = worker(tmp_path, 1, 60)
    other, _ = worker(tmp_path, 2, 4)
    other.publish()
    slow = threading.Event()

    def slow_others() -> list[int]:
        slow.set()
        time.sleep(0.6)
        return [4]

    monkeypatch.setattr(balance, "_others", slow_others)

    async def run() -> float:
        balance.start()
        while not slow.is_set():
            await asyncio.sleep(0.001)
        started, gaps = time.monotonic(), []
        while balance.limit is None:  # set when the slow exchange ends
            tick = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - tick)
        assert time.monotonic() - started > 0.4
        balance.stop()
        return max(gaps)

    assert asyncio.run(run()) < 0.3
    assert balance.limit == 32 + 3 and not balance.path.exists()


def test_a_failed_publish_stops_shedding_and_the_next_one_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    balance, _ = worker(tmp_path, 1, 60)
    other, _ = worker(tmp_path, 2, 4)
    other.publish()
    failures = [ValueError("a bug")]
    real_others, real_set_limit = balance._others, balance._set_limit
    seen: list[list[int]] = []  # the others' counts each publish set the limit from

    def others_once_failing() -> list[int]:
        if failures:
            raise failures.pop()
        return real_others()

    def recording_set_limit(own: int, others: list[int]) -> None:
        seen.append(others)
        real_set_limit(own, others)

    monkeypatch.setattr(balance, "_others", others_once_failing)
    monkeypatch.setattr(balance, "_set_limit", recording_set_limit)

    async def run() -> None:
        balance.start()  # its exchange fails
        balance.attach(range(61))
        assert await published(balance, 61)  # the next publish went on
        balance.stop()

    asyncio.run(run())
    assert seen[0] == [] and seen[1] == [4]  # the failed one counted no one: no shedding
    assert "publishing the connection count failed" in caplog.text


def test_nothing_is_written_after_stop(tmp_path: Path) -> None:
    balance, _ = worker(tmp_path, 1, 3)
    balance.stop()
    assert balance._exchange(5) == [] and not balance.path.exists()
