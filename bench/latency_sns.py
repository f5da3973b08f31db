"""A benchmark SNS that costs nothing but latency.

A small HTTP endpoint speaking enough of the SNS query protocol for ``Publish`` and ``PublishBatch``:
it answers every call after a fixed delay (default 20 ms, a realistic round trip to SNS), does no
per-message work beyond echoing each entry's id, and fails on demand. Calls wait concurrently, so
figures measured against it show what the caller's own code costs at that latency — unlike moto,
whose single-threaded server and per-message delivery work become the limit.

Run it in its own process so it does not share the caller's interpreter lock::

    python -m bench.latency_sns --delay-ms 20      # prints "ready <port>", serves until stdin closes

Control (plain HTTP on the same port): ``POST /_control`` with a JSON body of any of
``{"delay_ms": 20, "mode": "ok" | "outage" | "throttle", "fail_every": 0}`` — ``outage`` answers every
call with HTTP 500 InternalError, ``throttle`` with HTTP 400 Throttling, ``fail_every: n`` fails every
n-th batch entry (HTTP 200, listed under ``Failed``, as SNS reports partial failures); ``GET /_stats``
returns ``{"calls", "entries", "failed_entries"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

_NS = "http://sns.amazonaws.com/doc/2010-03-31/"
_ENTRY_ID = re.compile(rb"PublishBatchRequestEntries\.member\.\d+\.Id=([^&]*)")
_ACTION = re.compile(rb"(?:^|&)Action=([A-Za-z]+)")


@dataclass
class Behaviour:
    delay_ms: float = 20.0
    mode: str = "ok"
    fail_every: int = 0


@dataclass
class Stats:
    calls: int = 0
    entries: int = 0
    failed_entries: int = 0


class LatencySns:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stats = Stats()
        self._sequence = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # HTTP/1.1 keep-alive: botocore reuses its pooled connections
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_block = head.partition(b"\r\n")
                length = 0
                for line in header_block.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                status, payload, content_type = await self._answer(request_line, body)
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (status, b"OK" if status == 200 else b"Error", content_type, len(payload))
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass  # the client closed its connection, or the server is stopping
        finally:
            writer.close()

    async def _answer(self, request_line: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        method, path = request_line.split(b" ")[:2]
        if path.startswith(b"/_control"):
            if method == b"POST" and body:
                for key, value in json.loads(body).items():
                    setattr(self.behaviour, key, type(getattr(self.behaviour, key))(value))
            return 200, json.dumps(asdict(self.behaviour)).encode(), b"application/json"
        if path.startswith(b"/_stats"):
            return 200, json.dumps(asdict(self.stats)).encode(), b"application/json"
        self.stats.calls += 1
        await asyncio.sleep(self.behaviour.delay_ms / 1000)
        action = _ACTION.search(body)
        name = action.group(1).decode() if action else ""
        if self.behaviour.mode == "outage":
            return 500, _error("Receiver", "InternalError", "benchmark outage"), b"text/xml"
        if self.behaviour.mode == "throttle":
            return 400, _error("Sender", "Throttling", "Rate exceeded"), b"text/xml"
        if name == "Publish":
            self.stats.entries += 1
            return 200, self._publish(), b"text/xml"
        if name == "PublishBatch":
            return 200, self._publish_batch(_ENTRY_ID.findall(body)), b"text/xml"
        return 400, _error("Sender", "InvalidAction", f"not served here: {name}"), b"text/xml"

    def _next_id(self) -> str:
        self._sequence += 1
        return f"00000000-0000-4000-8000-{self._sequence:012d}"

    def _publish(self) -> bytes:
        return (
            f'<PublishResponse xmlns="{_NS}"><PublishResult><MessageId>{self._next_id()}</MessageId>'
            f"</PublishResult><ResponseMetadata><RequestId>{self._next_id()}</RequestId>"
            "</ResponseMetadata></PublishResponse>"
        ).encode()

    def _publish_batch(self, entry_ids: list[bytes]) -> bytes:
        successful, failed = [], []
        every = self.behaviour.fail_every
        for raw in entry_ids:
            entry_id = raw.decode()
            self.stats.entries += 1
            if every and self.stats.entries % every == 0:
                self.stats.failed_entries += 1
                failed.append(
                    f"<member><Id>{entry_id}</Id><Code>InternalError</Code>"
                    "<Message>benchmark entry failure</Message><SenderFault>false</SenderFault></member>"
                )
            else:
                successful.append(
                    f"<member><Id>{entry_id}</Id><MessageId>{self._next_id()}</MessageId></member>"
                )
        return (
            f'<PublishBatchResponse xmlns="{_NS}"><PublishBatchResult>'
            f"<Successful>{''.join(successful)}</Successful><Failed>{''.join(failed)}</Failed>"
            f"</PublishBatchResult><ResponseMetadata><RequestId>{self._next_id()}</RequestId>"
            "</ResponseMetadata></PublishBatchResponse>"
        ).encode()


def _error(kind: str, code: str, message: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{_NS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>bench</RequestId></ErrorResponse>"
    ).encode()


async def serve(behaviour: Behaviour, port: int = 0) -> None:
    sns = LatencySns(behaviour)
    server = await asyncio.start_server(sns.handle, "127.0.0.1", port, backlog=256)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    stop = asyncio.get_running_loop().create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    def wait_for_stdin_to_close() -> None:  # the parent closes our stdin (or dies): stop
        sys.stdin.read()
        stop.get_loop().call_soon_threadsafe(finish)

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    async with server:
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency_sns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    args = parser.parse_args(argv)
    asyncio.run(serve(Behaviour(delay_ms=args.delay_ms), args.port))
    return 0


# --- the parent's side ------------------------------------------------------------------------------


class LatencySnsProcess:
    """The latency SNS in a child process on a free loopback port."""

    def __init__(self, delay_ms: float = 20.0) -> None:
        import subprocess

        from bench.env import ROOT

        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.latency_sns", "--delay-ms", str(delay_ms)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            self.close()
            raise RuntimeError("latency SNS did not start")
        self.endpoint = f"http://127.0.0.1:{line[1]}"

    def control(self, **behaviour: Any) -> dict[str, Any]:
        return self._http("POST", "/_control", json.dumps(behaviour).encode())

    def stats(self) -> dict[str, Any]:
        return self._http("GET", "/_stats", b"")

    def _http(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        import http.client

        host, port = self.endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, path, body=body)
            answer: dict[str, Any] = json.loads(conn.getresponse().read())
            return answer
        finally:
            conn.close()

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except Exception:
                self._process.kill()

    def __enter__(self) -> LatencySnsProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
