"""What bench/overload.py measures and how it judges it: the report, and the pass conditions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    capacity_rps: float = 0.0
    target_rps: float = 0.0
    duration_s: float = 0.0
    sent: int = 0
    answered: int = 0
    ok: int = 0
    rejected_429: int = 0
    retry_after_missing: int = 0
    server_errors_5xx: int = 0
    other_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    stale_retries: int = 0
    accepted_rps: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_429_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    max_p99_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_mid_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0
    healthy_after: bool = False
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"capacity {self.capacity_rps:.0f} req/s, target {self.target_rps:.0f} req/s for "
                f"{self.duration_s:.0f} s\n"
                f"sent {self.sent}  200 {self.ok}  429 {self.rejected_429}  "
                f"5xx {self.server_errors_5xx}  other {self.other_status or 0}  lost {self.lost}"
                f"{'  errors ' + str(self.errors) if self.errors else ''}"
                f"  (stale keep-alive retries {self.stale_retries})\n"
                f"accepted {self.accepted_rps:.0f} req/s during the overload\n"
                f"accepted latency p50 {self.p50_ms:.1f} ms  p99 {self.p99_ms:.1f} ms  "
                f"max {self.max_ms:.1f} ms (bound {self.max_p99_ms:.0f} ms); "
                f"429 p99 {self.p99_429_ms:.1f} ms\n"
                f"RSS start {self.rss_start_mb:.1f} MB  mid {self.rss_mid_mb:.1f} MB  "
                f"end {self.rss_end_mb:.1f} MB  max {self.rss_max_mb:.1f} MB\n"
                f"healthy after: {self.healthy_after}\n"
                + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def p99_bound_ms(capacity_rps: float, texts: int, queue_size: int, max_batch_size: int) -> float:
    """What a bounded queue promises: an accepted request waits at most for the texts queued
    ahead of it plus the batch running, at the measured rate; x3 and +200 ms for scheduling
    noise (the load generator shares the machine)."""
    texts_per_s = max(capacity_rps * texts, 1e-9)
    return 3 * 1000 * (queue_size + max_batch_size) / texts_per_s + 200


def check(report: Report, *, max_p99_ms: float, max_rss_growth_mb: float,
          expect_429: bool = True) -> Report:
    report.max_p99_ms = max_p99_ms
    failures = report.failures
    if report.other_status:
        failures.append(f"statuses other than 200/429: {report.other_status}")
    if report.retry_after_missing:
        failures.append(f"{report.retry_after_missing} 429s without Retry-After")
    if report.lost or report.errors:
        failures.append(f"lost {report.lost} ({report.errors})")
    if expect_429 and not report.rejected_429:
        failures.append("no 429 at all: the load did not exceed capacity")
    if not report.ok:
        failures.append("no request accepted")
    if report.p99_ms > max_p99_ms:
        failures.append(f"p99 {report.p99_ms:.0f} ms > {max_p99_ms:.0f} ms")
    if report.rss_end_mb - report.rss_start_mb > max_rss_growth_mb:
        failures.append(f"RSS grew {report.rss_end_mb - report.rss_start_mb:.0f} MB")
    if not report.healthy_after:
        failures.append("not healthy afterwards")
    return report
