"""A benchmark SNS that costs nothing but latency — and refuses what SNS refuses.

A small HTTP endpoint speaking enough of the SNS query protocol for ``Publish`` and ``PublishBatch``:
it answers every call after a fixed delay (default 20 ms, a realistic round trip to SNS), does no
per-message work beyond checking each request as SNS does and echoing each entry's id, and fails on
demand. Calls wait concurrently, so figures measured against it show what the caller's own code
costs at that latency — unlike moto, whose single-threaded server and per-message delivery work
become the limit.

It refuses, with SNS's error codes (HTTP 400, sender fault), the requests SNS refuses:
``EmptyBatchRequest``, ``TooManyEntriesInBatchRequest`` (more than 10 entries),
``BatchEntryIdsNotDistinct``, ``InvalidBatchEntryId`` (not 1-80 letters, digits, ``-`` or ``_``),
``BatchRequestTooLong`` (a batch over 256 KiB, bodies and attributes together), ``InvalidParameter``
(a message over 256 KiB, or a FIFO topic's message without ``MessageGroupId``).

It records the round trip it gave each call (request read to answer written) and reports them.

Run it in its own process so it does not share the caller's interpreter lock::

    python -m bench.latency_sns --delay-ms 20      # prints "ready <port>", serves until stdin closes

Control (plain HTTP on the same port): ``POST /_control`` with a JSON body of any of
``{"delay_ms": 20, "mode": "ok" | "outage" | "throttle", "fail_every": 0}`` — ``outage`` answers every
call with HTTP 500 InternalError, ``throttle`` with HTTP 400 Throttling, ``fail_every: n`` fails every
n-th batch entry (HTTP 200, listed under ``Failed``, as SNS reports partial failures); ``GET /_stats``
returns ``{"calls", "entries", "failed_entries", "refused": {code: calls}, "round_trip_ms": {"calls",
"p50", "p99", "max"}}``; ``POST /_stats/reset`` starts the counts again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote_plus

_NS = "http://sns.amazonaws.com/doc/2010-03-31/"
#: SNS's limits, as its API reference states them.
MAX_BATCH_ENTRIES = 10
MAX_REQUEST_BYTES = 256 * 1024
_BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_MEMBER = "PublishBatchRequestEntries.member."


class Refused(Exception):
    """A request SNS refuses as a whole: HTTP 400, the sender's fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    refused: Counter[str] = field(default_factory=Counter)
    round_trips_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        trips = sorted(self.round_trips_ms)
        return {
            "calls": self.calls,
            "entries": self.entries,
            "failed_entries": self.failed_entries,
            "refused": dict(self.refused),
            "round_trip_ms": {
                "calls": len(trips),
                "p50": _nearest_rank(trips, 50),
                "p99": _nearest_rank(trips, 99),
                "max": trips[-1] if trips else None,
            },
        }


def _nearest_rank(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


@dataclass
class Entry:
    """One message of a call, as SNS counts it: its id and group, and its size in bytes (the body
    plus each attribute's name, type and value)."""

    id: str = ""
    size: int = 0
    group_id: str | None = None


def form_fields(body: bytes) -> dict[str, bytes]:
    """The request's form: each name decoded, each value as sent (percent-encoded), decoded only
    where its text is needed; a body or attribute value is only measured (``encoded_size``)."""
    fields: dict[str, bytes] = {}
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        fields[unquote_plus(name.decode())] = value
    return fields


def decoded(value: bytes | None) -> str:
    return unquote_plus(value.decode()) if value is not None else ""


def encoded_size(value: bytes) -> int:
    """The bytes a form value stands for: a form spells each byte as itself, ``+`` (a space) or
    ``%XX``, so every ``%`` stands for one byte in three characters."""
    return len(value) - 2 * value.count(b"%")


def parse_publish(fields: dict[str, bytes]) -> Entry:
    """A Publish's message, or a batch member's, from its fields (``Id``, ``Message``,
    ``MessageGroupId``, ``MessageAttributes.entry.N.*``)."""
    size = encoded_size(fields.get("Message", b""))
    for name, value in fields.items():
        if not name.startswith("MessageAttributes.entry."):
            continue
        if name.endswith((".Name", ".Value.DataType", ".Value.StringValue")):
            size += encoded_size(value)
        elif name.endswith(".Value.BinaryValue"):
            size += len(base64.b64decode(decoded(value)))
    group = fields.get("MessageGroupId")
    return Entry(id=decoded(fields.get("Id")), size=size, group_id=decoded(group) if group else None)


def parse_publish_batch(fields: dict[str, bytes]) -> list[Entry]:
    members: dict[int, dict[str, bytes]] = {}
    for name, value in fields.items():
        if name.startswith(_MEMBER):
            number, _, rest = name[len(_MEMBER) :].partition(".")
            if number.isdigit() and rest:
                members.setdefault(int(number), {})[rest] = value
    return [parse_publish(members[number]) for number in sorted(members)]


def check_publish(topic_arn: str, entry: Entry) -> None:
    """What SNS refuses in a Publish: a message over 256 KiB, a FIFO message without a group."""
    if entry.size > MAX_REQUEST_BYTES:
        raise Refused("InvalidParameter", "Invalid parameter: Message too long")
    if topic_arn.endswith(".fifo") and not entry.group_id:
        raise Refused(
            "InvalidParameter",
            "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
        )


def check_publish_batch(topic_arn: str, entries: list[Entry]) -> None:
    """What SNS refuses in a PublishBatch, whole: no entries, more than 10, ids repeated or
    malformed, more than 256 KiB in all, a FIFO entry without a group."""
    if not entries:
        raise Refused("EmptyBatchRequest", "The batch request doesn't contain any entries.")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise Refused(
            "TooManyEntriesInBatchRequest",
            f"The batch request contains more entries than permissible ({MAX_BATCH_ENTRIES}).",
        )
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise Refused(
            "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id."
        )
    if any(not _BATCH_ENTRY_ID.fullmatch(i) for i in ids):
        raise Refused("InvalidBatchEntryId", "The Id of a batch entry in a batch request is not valid.")
    if sum(e.size for e in entries) > MAX_REQUEST_BYTES:
        raise Refused(
            "BatchRequestTooLong",
            f"The length of all the messages put together is more than the limit ({MAX_REQUEST_BYTES})",
        )
    if topic_arn.endswith(".fifo") and any(not e.group_id for e in entries):
        raise Refused(
            "InvalidParameter",
            "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
        )


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
                received = time.perf_counter()
                status, payload, content_type = await self._answer(request_line, body)
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (status, b"OK" if status == 200 else b"Error", content_type, len(payload))
                    + payload
                )
                await writer.drain()
                if not request_line.split(b" ")[1].startswith(b"/_"):
                    self.stats.round_trips_ms.append((time.perf_counter() - received) * 1000)
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
            if method == b"POST" and path.startswith(b"/_stats/reset"):
                self.stats = Stats()
            return 200, json.dumps(self.stats.to_dict()).encode(), b"application/json"
        self.stats.calls += 1
        await asyncio.sleep(self.behaviour.delay_ms / 1000)
        fields = form_fields(body)
        name = decoded(fields.get("Action"))
        if self.behaviour.mode == "outage":
            return 500, _error("Receiver", "InternalError", "benchmark outage"), b"text/xml"
        if self.behaviour.mode == "throttle":
            return 400, _error("Sender", "Throttling", "Rate exceeded"), b"text/xml"
        topic_arn = decoded(fields.get("TopicArn"))
        try:
            if name == "Publish":
                check_publish(topic_arn, parse_publish(fields))
                self.stats.entries += 1
                return 200, self._publish(), b"text/xml"
            if name == "PublishBatch":
                entries = parse_publish_batch(fields)
                check_publish_batch(topic_arn, entries)
                return 200, self._publish_batch([e.id for e in entries]), b"text/xml"
        except Refused as refused:
            self.stats.refused[refused.code] += 1
            return 400, _error("Sender", refused.code, str(refused)), b"text/xml"
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

    def _publish_batch(self, entry_ids: list[str]) -> bytes:
        successful, failed = [], []
        every = self.behaviour.fail_every
        for entry_id in entry_ids:
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
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=Behaviour.delay_ms,
        help=f"delay per call, ms (default {Behaviour.delay_ms:g})",
    )
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

    def reset_stats(self) -> None:
        self._http("POST", "/_stats/reset", b"")

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
