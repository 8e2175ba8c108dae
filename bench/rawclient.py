"""A lean HTTP/1.1 keep-alive client for load generators that share the machine with the service."""

from __future__ import annotations

import asyncio
import time


class RawClient:
    """A lean HTTP/1.1 keep-alive client on asyncio streams: the load generator shares the
    machine with the service, so it must cost little CPU per request (httpx costs ~5x more).

    Like any keep-alive client it must not reuse a connection the server has just closed for
    idleness (uvicorn: timeout_keep_alive, 5 s): connections idle longer than `max_idle_s` are
    dropped, and a reused connection that closes before a single byte of answer is retried once
    on a new one (the server never read that request). Those retries are counted."""

    def __init__(self, host: str, port: int, max_connections: int, max_idle_s: float = 3.0) -> None:
        self.host, self.port, self.max_idle_s = host, port, max_idle_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self.stale_retries = 0

    @staticmethod
    def build(method: str, path: str, body: bytes = b"",
              headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.max_idle_s:
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    async def send(self, raw: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        async with self._slots:
            for attempt in range(2):
                reader, writer, reused = await self._connection()
                status_line = b""
                try:
                    writer.write(raw)
                    status_line = await asyncio.wait_for(reader.readline(), timeout)
                    if not status_line:
                        raise ConnectionResetError("connection closed before the response")
                    headers: dict[str, str] = {}
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        key, _, value = line.decode("latin-1").partition(":")
                        headers[key.strip().lower()] = value.strip()
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                except (ConnectionResetError, BrokenPipeError):
                    writer.close()
                    if reused and attempt == 0 and not status_line:  # stale: never read
                        self.stale_retries += 1
                        continue
                    raise
                except BaseException:
                    writer.close()
                    raise
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                else:
                    self._idle.append((reader, writer, time.monotonic()))
                return int(status_line.split()[1]), headers, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()
