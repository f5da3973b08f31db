"""The local stack's HTTP front, on its real server (werkzeug, loopback, any free port) spoken to in raw
HTTP: what it hands its handlers (chunked bodies whole), what it answers itself (405 with JSON for an
undeclared method, 400/411/413/408 for a body it cannot trust, 400 for a Host it does not serve), and the
bind rule that keeps the stack on loopback unless the operator asks otherwise."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from payment_outbox_dev import cli
from payment_outbox_dev.checks.template import load_template
from payment_outbox_dev.local.harness import MISSING_ROUTE_BODY, LocalFunctions
from payment_outbox_dev.local.http_front import (
    Answer,
    ApiFront,
    LocalRoute,
    Request,
    allowed_hosts,
    check_bind,
    host_name,
    serve,
)
from payment_outbox_dev.local.observe import Narrator
from payment_outbox_dev.local.pooled import PooledApi
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET, StackConfig
from tests.support import ROOT

pytestmark = pytest.mark.unit

MAX_BODY = 1024
READ_TIMEOUT = 0.5
#: Every interface: the address the bind rule is about.
EVERYWHERE = "0.0.0.0"  # noqa: S104


@dataclass
class Recorder:
    """The API handler: remembers what it was handed and echoes it."""

    seen: list[Request] = field(default_factory=list)

    def __call__(self, request: Request) -> Answer:
        self.seen.append(request)
        return Answer.json(200, {"method": request.method, "body": request.body.decode()})


@dataclass
class Front:
    port: int
    api: Recorder
    said: list[str]

    def exchange(
        self, head: str, body: bytes = b"", *, keep_open: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """Sends ``head`` (CRLF added) and ``body``; the answer's status, headers and body."""
        raw = head.replace("\n", "\r\n").replace("PORT", str(self.port)).encode() + b"\r\n\r\n" + body
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(raw)
            if not keep_open:
                conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        head_bytes, _, payload = received.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers, payload


def _front(api: Any, hosts: frozenset[str], said: list[str]) -> ApiFront:
    local = [
        LocalRoute("GET", "/_local/thing", "a thing", lambda _: Answer.json(200, {"thing": True})),
        LocalRoute(
            "POST", "/_local/faults", "set faults", lambda r: Answer.json(200, {"got": r.body.decode()})
        ),
    ]
    return ApiFront(
        api, local, hosts=hosts, say=lambda kind, text: said.append(text), max_body_bytes=MAX_BODY
    )


@pytest.fixture
def front() -> Iterator[Front]:
    api, said = Recorder(), []
    server = serve("127.0.0.1", 0, lambda kind, text: said.append(text), read_timeout=READ_TIMEOUT)
    server.app = _front(api, allowed_hosts("127.0.0.1"), said)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Front(int(server.server_address[1]), api, said)
    finally:
        server.shutdown()
        server.server_close()


# --- what the handlers get ----------------------------------------------------------------------------


def test_a_chunked_body_reaches_the_handler_whole(front: Front) -> None:
    # Given a POST whose body comes in two chunks and no Content-Length
    chunks = b'7\r\n{"a": 1\r\n1\r\n}\r\n0\r\n\r\n'
    status, _, payload = front.exchange(
        "POST /orders HTTP/1.1\nHost: 127.0.0.1:PORT\nTransfer-Encoding: chunked\nContent-Type: text/plain",
        chunks,
    )

    # Then the handler got the whole body, de-chunked
    assert status == 200
    assert json.loads(payload) == {"method": "POST", "body": '{"a": 1}'}
    assert front.api.seen[0].body == b'{"a": 1}'


def test_a_body_with_content_length_reaches_the_handler_with_headers_and_query(front: Front) -> None:
    status, _, _ = front.exchange(
        "POST /orders?x=1&x=2 HTTP/1.1\nHost: localhost:PORT\nContent-Length: 5\nX-Signature: t=1,v1=ab",
        b"hello",
    )
    assert status == 200
    seen = front.api.seen[0]
    assert (seen.path, seen.body, seen.query) == ("/orders", b"hello", {"x": ["1", "2"]})
    assert seen.headers["X-Signature"] == "t=1,v1=ab"


def test_a_percent_encoded_path_reaches_the_handler_as_sent(front: Front) -> None:
    # Given a path whose segment holds an encoded slash, space and non-ASCII byte
    status, _, _ = front.exchange("GET /orders/a%2Fb%20c%C3%A9 HTTP/1.1\nHost: 127.0.0.1")

    # Then the handler gets it still encoded, as API Gateway's REST API hands it on (one segment)
    assert status == 200
    assert front.api.seen[0].path == "/orders/a%2Fb%20c%C3%A9"


# --- methods a route does not declare -----------------------------------------------------------------


def test_a_method_a_local_route_does_not_declare_is_405_with_json_and_allow(front: Front) -> None:
    # When TRACE (or DELETE) is sent to a GET-only local route
    for method in ("TRACE", "DELETE"):
        status, headers, payload = front.exchange(f"{method} /_local/thing HTTP/1.1\nHost: 127.0.0.1")

        # Then the answer is 405, JSON, naming what is allowed — never the stdlib's 501 HTML page
        assert status == 405
        assert headers["Allow"] == "GET"
        assert headers["Content-Type"] == "application/json"
        assert "allowed: GET" in json.loads(payload)["message"]
    assert front.api.seen == []


def test_head_of_a_get_route_answers_its_headers_without_a_body(front: Front) -> None:
    status, headers, payload = front.exchange("HEAD /_local/thing HTTP/1.1\nHost: 127.0.0.1")
    assert status == 200
    assert int(headers["Content-Length"]) == len(b'{"thing": true}')
    assert payload == b""


def test_an_unknown_local_path_is_404_listing_the_local_routes(front: Front) -> None:
    status, _, payload = front.exchange("GET /_local/nothing HTTP/1.1\nHost: 127.0.0.1")
    assert status == 404
    assert json.loads(payload)["control"] == ["GET /_local/thing", "POST /_local/faults"]


def test_trace_on_an_api_route_is_api_gateways_405_from_the_template() -> None:
    # Given the front with the template's routes (nothing is invoked for a method no route declares)
    functions = LocalFunctions(ROOT, load_template(ROOT / "template.yaml"))
    try:
        narrator = Narrator(io.StringIO())
        app = _front(PooledApi(functions, narrator), allowed_hosts("127.0.0.1"), [])

        # When TRACE is sent to /orders
        answer = app.answer(Request("TRACE", "/orders"))
    finally:
        functions.close()

    # Then it is 405 with API Gateway's JSON body and the methods /orders has
    assert answer.status == 405
    assert json.loads(answer.body) == MISSING_ROUTE_BODY
    assert "POST" in dict(answer.headers)["Allow"]


# --- bodies the front cannot trust --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: -1", 400),
        ("POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 12abc", 400),
        ("POST /orders HTTP/1.1\nHost: 127.0.0.1", 411),
        ("PUT /orders HTTP/1.1\nHost: 127.0.0.1", 411),
        (f"POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {MAX_BODY + 1}", 413),
        ("POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 9999999999999999999999", 413),
        ("POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 3\nTransfer-Encoding: chunked", 400),
    ],
)
def test_a_content_length_that_cannot_be_trusted_is_refused_before_any_handler(
    front: Front, head: str, expected: int
) -> None:
    # When the request is sent (its body never follows; the client keeps the connection open)
    started = time.monotonic()
    status, headers, payload = front.exchange(head, keep_open=True)

    # Then the front answers at once with a JSON reason, and no handler ran
    assert status == expected
    assert headers["Content-Type"] == "application/json"
    assert json.loads(payload)["message"]
    assert time.monotonic() - started < READ_TIMEOUT
    assert front.api.seen == []


def test_a_get_without_content_length_is_served(front: Front) -> None:
    status, _, payload = front.exchange("GET /orders/1 HTTP/1.1\nHost: 127.0.0.1")
    assert status == 200
    assert json.loads(payload) == {"method": "GET", "body": ""}


def test_a_chunked_body_over_the_limit_is_413(front: Front) -> None:
    big = b"x" * (MAX_BODY + 1)
    chunked = f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
    status, _, _ = front.exchange(
        "POST /orders HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked", chunked
    )
    assert status == 413
    assert front.api.seen == []


def test_a_body_shorter_than_its_content_length_is_answered_not_waited_on_forever(front: Front) -> None:
    # Given a client that promises 100 bytes, sends 10 and then waits
    started = time.monotonic()
    status, _, _ = front.exchange(
        "POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 100", b"0123456789", keep_open=True
    )

    # Then the front gives up after its read timeout with 408, and no handler ran
    assert status == 408
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 5
    assert front.api.seen == []


def test_a_body_cut_short_by_the_client_is_400(front: Front) -> None:
    status, _, payload = front.exchange(
        "POST /orders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 100", b"0123456789"
    )
    assert status == 400
    assert "short" in json.loads(payload)["message"]
    assert front.api.seen == []


# --- the Host header (DNS rebinding) ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:PORT", "localhost:PORT", "LOCALHOST", "[::1]:PORT"])
def test_loopback_host_names_are_served(front: Front, host: str) -> None:
    status, _, _ = front.exchange(f"GET /_local/thing HTTP/1.1\nHost: {host}")
    assert status == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:PORT", "127.0.0.1.attacker.example"])
def test_a_host_the_stack_does_not_serve_is_400_and_reaches_no_handler(front: Front, host: str) -> None:
    # When a page on another site, its name rebound to 127.0.0.1, posts to the stack
    status, _, payload = front.exchange(f"POST /orders HTTP/1.1\nHost: {host}\nContent-Length: 2", b"{}")

    # Then the front refuses it by its Host header
    assert status == 400
    assert "is not served here" in json.loads(payload)["message"]
    assert front.api.seen == []


def test_a_request_without_host_is_400(front: Front) -> None:
    status, _, _ = front.exchange("GET /_local/thing HTTP/1.0")
    assert status == 400


def test_allowed_hosts_are_loopback_the_bound_address_and_the_named_ones() -> None:
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("192.168.1.20", ["Stack.Lan"]) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "192.168.1.20",
        "stack.lan",
    }
    assert EVERYWHERE not in allowed_hosts(EVERYWHERE)  # a wildcard is no Host name
    assert [host_name(h) for h in ("[::1]:3000", "a.b:80", "a.b", "::1")] == ["::1", "a.b", "a.b", "::1"]


# --- binding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_flag(host: str) -> None:
    check_bind(host, expose=False, default_secret=True)


def test_a_non_loopback_bind_needs_the_flag_and_a_secret_of_ones_own() -> None:
    with pytest.raises(ValueError, match="--expose"):
        check_bind(EVERYWHERE, expose=False, default_secret=False)
    with pytest.raises(ValueError, match="webhook secret of your own"):
        check_bind("192.168.1.20", expose=True, default_secret=True)
    check_bind("192.168.1.20", expose=True, default_secret=False)


def test_the_stack_config_applies_the_bind_rule_and_keeps_the_emulator_on_loopback(tmp_path: Path) -> None:
    config = StackConfig(ROOT, host=EVERYWHERE, data_dir=tmp_path, expose=True)
    with pytest.raises(ValueError, match="webhook secret"):
        config.check_bind()
    config.webhook_secret = "an operator's own secret, long enough"
    config.check_bind()
    assert config.emulator_host == "127.0.0.1"
    assert StackConfig(ROOT, host="::1").emulator_host == "::1"


def test_local_on_a_public_address_without_expose_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When `local --host 0.0.0.0` is run without --expose
    code = cli.main(
        [
            "--root",
            str(ROOT),
            "local",
            "--host",
            EVERYWHERE,
            "--api-port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
        ]
    )

    # Then it refuses with the reason and created nothing
    assert code == 1
    assert "pass --expose" in capsys.readouterr().out
    assert not (tmp_path / "d").exists()


def test_local_exposed_with_the_published_secret_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    code = cli.main(
        ["--root", str(ROOT), "local", "--host", EVERYWHERE, "--expose", "--data-dir", str(tmp_path / "d"),
         "--webhook-secret", LOCAL_WEBHOOK_SECRET]
    )  # fmt: skip
    assert code == 1
    assert "webhook secret of your own" in capsys.readouterr().out
    assert not (tmp_path / "d").exists()
