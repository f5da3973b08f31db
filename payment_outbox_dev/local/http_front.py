"""The local stack's HTTP front: a WSGI application served by werkzeug's threaded server.

It is handed what it serves — the API handler (each request to the route's function) and the local
routes (``/_local/*``, ``/openapi.json``) with their handlers — and knows nothing of the stack. Before
anything is served, the request is checked as API Gateway and a careful server would:

- the ``Host`` header must name an allowed host (loopback, the bound address, or one the operator
  allowed): a page on another site cannot reach the stack through DNS rebinding — 400 otherwise;
- the body is read whole, ``Content-Length`` or chunked, never past ``MAX_BODY_BYTES`` (API Gateway's
  payload limit, 10 MB): a negative or malformed length is 400, a length with a chunked body 400, a
  body method without either 411, a larger body 413, a body slower than ``READ_TIMEOUT_SECONDS`` 408 —
  never a thread left waiting;
- a local route answers its declared method only: any other is 405 with an ``Allow`` header and a JSON
  body (API routes get the same from the harness: 404 for an unknown path, 405 for another method).

``check_bind`` keeps the stack on loopback unless told otherwise: binding another address needs the
explicit flag and a webhook secret of the operator's own (the default one is published in this
repository, so anyone could sign a callback with it).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from payment_outbox_dev.local.describe import describe

#: API Gateway's payload limit (10 MB): a larger request body is refused with 413.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: How long a connection may keep the server waiting for the next bytes it promised.
READ_TIMEOUT_SECONDS = 10.0
#: Methods whose requests carry a body: without Content-Length or a chunked body they are 411.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Host names that always reach a loopback-bound stack.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Addresses that bind every interface: no client names them in a Host header.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104  # nosec B104 - recognised, not bound
#: Paths whose requests are not narrated one line each (the operator's own polling).
QUIET_PREFIX = "/_local/"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The request target as the client sent it, path and query still percent-encoded (what SigV4 signs).
    raw_target: str = ""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, document: Any, headers: Sequence[tuple[str, str]] = ()) -> Answer:
        body = json.dumps(document, default=str).encode()
        return cls(status, [("Content-Type", "application/json"), *headers], body)


Handler = Callable[[Request], Answer]


@dataclass(frozen=True)
class LocalRoute:
    """A route of the local stack itself (not in the template, not in AWS)."""

    method: str
    path: str
    what: str
    handler: Handler


class Refused(Exception):
    """A request the front answers itself, before any handler sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, expose: bool, default_secret: bool) -> None:
    """Raises ValueError when binding ``host`` would expose the stack without the operator asking."""
    if is_loopback(host):
        return
    if not expose:
        raise ValueError(
            f"--host {host} is not a loopback address: the local stack serves /admin/* without IAM and"
            " /_local/state with phone numbers; pass --expose to bind it anyway"
        )
    if default_secret:
        raise ValueError(
            f"--host {host} with --expose needs a webhook secret of your own (--webhook-secret or"
            " $WEBHOOK_SECRET): the default one is public, anyone could sign a callback with it"
        )


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host header names the front answers: loopback, the bound address, and ``extra``."""
    names = set(LOOPBACK_HOSTS) | {name.lower().strip("[]") for name in extra}
    if bind_host not in WILDCARD_HOSTS:  # a wildcard is no name a client uses
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def request_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it, percent-encoding kept — as API Gateway's REST API hands it to
    the function (``PATH_INFO`` is decoded: ``%2F`` would become a separator, ``%20`` a space)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return (urlsplit(raw).path if raw else environ.get("PATH_INFO")) or "/"


def host_name(header: str) -> str:
    """The host of a Host header, without its port: ``[::1]:3000`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ApiFront:
    """The WSGI application: checks the request, then hands it to its route's handler."""

    def __init__(
        self,
        api: Handler,
        local_routes: Sequence[LocalRoute],
        *,
        hosts: frozenset[str],
        say: Callable[[str, str], None],
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._api = api
        self._local_routes = list(local_routes)
        self._hosts = hosts
        self._say = say
        self._max_body = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        method = environ["REQUEST_METHOD"].upper()
        path = request_path(environ)
        try:
            answer = self.answer(self._request(environ, method, path))
        except Refused as refused:
            self._say("http", f"{method} {path}: refused {refused.status}: {refused.message}")
            answer = Answer.json(refused.status, {"message": refused.message})
        except TimeoutError:
            self._say("http", f"{method} {path}: the body did not arrive within {READ_TIMEOUT_SECONDS:g} s")
            answer = Answer.json(408, {"message": "Request Timeout"})
        if not path.startswith(QUIET_PREFIX):
            elapsed = (time.monotonic() - started) * 1000
            self._say("http", f"{method} {path} → {answer.status} ({elapsed:.0f} ms)")
        headers = [
            (name, value)
            for name, value in answer.headers
            if name.lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        headers.append(("Content-Length", str(len(answer.body))))
        start_response(f"{answer.status} {_phrase(answer.status)}", headers)
        return [] if method == "HEAD" else [answer.body]

    def answer(self, request: Request) -> Answer:
        declared = [route for route in self._local_routes if route.path == request.path]
        for route in declared:
            if request.method == route.method or (request.method, route.method) == ("HEAD", "GET"):
                return route.handler(request)
        if declared:
            allow = ", ".join(sorted({route.method for route in declared}))
            return Answer.json(
                405,
                {"message": f"{request.method} is not allowed here; allowed: {allow}"},
                [("Allow", allow)],
            )
        if request.path.startswith(QUIET_PREFIX):
            return Answer.json(
                404,
                {
                    "message": "no such local control",
                    "control": [f"{r.method} {r.path}" for r in self._local_routes],
                },
            )
        return self._api(request)

    def _request(self, environ: dict[str, Any], method: str, path: str) -> Request:
        host = environ.get("HTTP_HOST")
        if not host:
            raise Refused(400, "a Host header is required")
        if host_name(host) not in self._hosts:
            raise Refused(
                400, f"Host {host!r} is not served here (allowed: {', '.join(sorted(self._hosts))})"
            )
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").title()] = environ[key]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        raw_target = environ.get("REQUEST_URI") or environ.get("RAW_URI") or path
        return Request(method, path, query, headers, self._body(environ, method), raw_target)

    def _body(self, environ: dict[str, Any], method: str) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if environ.get("wsgi.input_terminated"):  # chunked: the server de-chunks, we count
            if length:
                raise Refused(400, "Content-Length and a chunked body together")
            try:
                body: bytes = stream.read(self._max_body + 1)
            except OSError as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise Refused(400, f"malformed chunked body ({describe(exc)})") from exc
            if len(body) > self._max_body:
                raise Refused(413, f"the body is larger than {self._max_body} bytes")
            return body
        if not length:
            if method in BODY_METHODS:
                raise Refused(411, f"{method} needs a Content-Length or a chunked body")
            return b""
        if not length.isdigit():
            raise Refused(400, f"Content-Length {length!r} is not a byte count")
        size = int(length)
        if size > self._max_body:
            raise Refused(413, f"the body is larger than {self._max_body} bytes")
        chunks: list[bytes] = []
        remaining = size
        while remaining:
            chunk = stream.read(remaining)
            if not chunk:
                raise Refused(400, f"the body ended {remaining} byte(s) short of its Content-Length")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def serve(
    host: str,
    port: int,
    say: Callable[[str, str], None],
    app: ApiFront | None = None,
    *,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> BaseWSGIServer:
    """The front bound on ``host:port`` (port 0: any free port), threaded, not yet serving:
    ``serve_forever()`` serves, ``shutdown()`` and ``server_close()`` stop. Bound before the handlers
    exist (a port in use fails a start first), it may get its ``app`` later; until then it answers 503."""

    class FrontRequestHandler(WSGIRequestHandler):
        timeout = read_timeout

        def version_string(self) -> str:
            return "payment-outbox-local"

        def handle_expect_100(self) -> bool:
            return True  # werkzeug answers "100 Continue" itself, once, before the body is read

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """The front narrates each request itself."""

        def log(self, type: str, message: str, *args: Any) -> None:
            say("error", f"HTTP front: {message % args if args else message}")

        def connection_dropped(self, error: BaseException, environ: dict[str, Any] | None = None) -> None:
            # The client went away: nothing to answer, nothing to print but one line.
            say("http", f"client {self.client_address[0]} gone ({describe(error)})")

    server = make_server(host, port, app or _starting, threaded=True, request_handler=FrontRequestHandler)

    def log(type: str, message: str, *args: Any) -> None:
        say("error", f"HTTP front: {message % args if args else message}")

    server.log = log  # type: ignore[method-assign]
    return server


def _starting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b'{"message": "the local stack is starting"}'
    start_response(
        "503 Service Unavailable", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
