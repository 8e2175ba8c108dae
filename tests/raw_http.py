"""Raw HTTP/1.1 on a socket, for tests that must see exactly what the server sends: the bytes
of a request, the responses read back one by one, and whether the server closed the connection
after them (test_fastlane.py, test_balance_live.py)."""

from __future__ import annotations

import socket
import time


def request(body: bytes | str, content_type: str = "application/json", path: str = "/predict",
            extra: str = "X-API-Key: k3y\r\n") -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def exchange(port: int, *parts: bytes, count: int = 1, pause_s: float = 0.0) -> list[tuple]:
    """Send `parts` on one connection (pausing between them), read `count` responses:
    (status, headers dict, body bytes, connection closed after)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for i, part in enumerate(parts):
            if i and pause_s:
                time.sleep(pause_s)
            sock.sendall(part)
        stream = sock.makefile("rb")
        replies = [read_response(stream) for _ in range(count)]
        sock.settimeout(0.3)
        try:
            closed = stream.read(1) == b""
        except (TimeoutError, OSError):
            closed = False
    return [(*reply, closed) for reply in replies]


def read_response(stream) -> tuple[int, dict[str, str], bytes]:  # noqa: ANN001
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline().rstrip(b"\r\n")):
        name, _, value = line.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"header {name} twice"
        headers[name.lower()] = value.strip()
    return status, headers, stream.read(int(headers["content-length"]))
